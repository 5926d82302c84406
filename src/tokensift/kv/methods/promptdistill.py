"""PromptDistill: select at an intermediate layer and let the later layers process only the kept tokens.

Jin et al., 2025, "PromptDistill: Query-based Selective Token Retention in Intermediate Layers for Efficient
Large Language Model Inference" (arXiv:2503.23274): unlike GemFilter, the first layers' work is not thrown
away — the hidden states of the selected tokens (computed with the whole context in view) carry on through the
remaining layers at their original positions, and the first layers' caches are truncated to the same tokens.

Selection as in the authors' code: the last prompt token's scaled attention logits (``q·k`` times the layer's
scaling, before the softmax) averaged over the heads, smoothed by an average pool over ``pooling`` neighbouring
positions (their ``use_pooling``, kernel 5, on by default), the top tokens kept; the last token always stays.
Tested against that formula written out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor
from torch.nn import functional as F

from tokensift.errors import ParameterError
from tokensift.kv.filter import ContextFilter
from tokensift.kv.view import LayerView, last_token_logits, per_head
from tokensift.registry import Paper, option, register


@register
@dataclass
class PromptDistill(ContextFilter):
    """The last token's head-mean attention logits (pooled) at ``select_layer``; later layers continue on the kept
    tokens."""

    name: ClassVar[str] = "promptdistill"
    paper: ClassVar[Paper] = Paper(
        "Jin et al., 2025",
        "PromptDistill: Query-based Selective Token Retention in Intermediate Layers for Efficient Large Language "
        "Model Inference",
        arxiv="2503.23274",
    )
    summary: ClassVar[str] = "intermediate-layer query attention selects; later layers continue on the kept tokens"
    rerun = False
    depth = 13 / 31
    """The authors' setting for Llama-3.1-8B (selection after layer 13 of 32), as a share of the depth: the
    full-attention layer nearest to it (Gemma-3-270M: layer 5 of 18; SmolLM2-135M: 12 of 30)."""

    pooling: int = option(5, low=1)
    """Average-pool width over neighbouring positions (odd; 1 = no pooling)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pooling % 2 == 0:
            raise ParameterError(f"promptdistill: pooling must be odd, got {self.pooling}", option="pooling")
        self.protect_last = max(self.protect_last, 1)

    @property
    def rows_wanted(self) -> int | None:
        return 1

    def score(self, view: LayerView) -> Tensor:
        mean = (last_token_logits(view) * view.scaling).mean(0)
        if self.pooling > 1:  # the last token (always kept) is zeroed before pooling, as in the authors' code
            mean = torch.cat([mean[:-1], mean.new_zeros(1)])
            mean = F.avg_pool1d(mean[None, None], self.pooling, stride=1, padding=self.pooling // 2)[0, 0]
        return per_head(mean, view.kv_heads)
