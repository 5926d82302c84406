"""StreamingLLM: attention sinks plus a recent window.

Xiao et al., 2024, "Efficient Streaming Language Models with Attention Sinks" (arXiv:2309.17453): the
first few tokens soak up attention mass whatever they say (sinks); keeping them and the most recent
tokens keeps a model stable on any length. Works at prefill and, scored by position, while decoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from tokensift.kv.press import ScorerPress
from tokensift.kv.view import LayerView, per_head, recency
from tokensift.registry import Paper, option, register


@register
@dataclass
class StreamingLLM(ScorerPress):
    """Keep the first ``protect_first`` sink tokens (4 in the paper) and the most recent ones."""

    name: ClassVar[str] = "streaming_llm"
    paper: ClassVar[Paper] = Paper(
        "Xiao et al., 2024", "Efficient Streaming Language Models with Attention Sinks", arxiv="2309.17453"
    )
    summary: ClassVar[str] = "attention sinks + recent window"
    online = True

    protect_first: int = option(4, low=0)

    def score(self, view: LayerView) -> Tensor:
        return per_head(recency(view.n, view.keys.device), view.kv_heads)

    def update_online(self, scores: Tensor, attention: Tensor, positions: Tensor) -> Tensor:
        return positions.float()
