"""GemFilter: an early layer's attention picks the prompt tokens; the whole model then reads only those.

Shi et al., 2024, "Discovering the Gems in Early Layers: Accelerating Long-Context LLMs with 1000x Input
Token Reduction" (arXiv:2409.17422): the query of the prompt's last token already attends to the relevant
tokens at an early-middle layer. The forward stops at that layer; its last query's dot products with every
key, summed over the heads, rank the tokens; the kept ones (in their original order) are run through the
full model again as a short prompt with fresh positions, so every layer's prefill and cache shrink.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from tokensift.kv.filter import ContextFilter
from tokensift.kv.view import LayerView, last_token_logits, per_head
from tokensift.registry import Paper, register


@register
@dataclass
class GemFilter(ContextFilter):
    """The last query's q·k at ``select_layer``, summed over heads; the kept tokens are re-run."""

    name: ClassVar[str] = "gemfilter"
    paper: ClassVar[Paper] = Paper(
        "Shi et al., 2024",
        "Discovering the Gems in Early Layers: Accelerating Long-Context LLMs with 1000x Input Token Reduction",
        arxiv="2409.17422",
    )
    summary: ClassVar[str] = "an early layer's last-query attention selects; the model re-runs on the kept tokens"
    query_rows = 1
    rerun = True

    def score(self, view: LayerView) -> Tensor:
        return per_head(last_token_logits(view).sum(0), view.kv_heads)
