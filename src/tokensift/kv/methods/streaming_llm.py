"""StreamingLLM: attention sinks plus a recent window.

Xiao et al., 2024, "Efficient Streaming Language Models with Attention Sinks": the first few tokens
soak up attention mass whatever they say (sinks); keeping them and the most recent tokens keeps a model
stable on any length. Works at prefill and, scored by position, while decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from tokensift.kv.press import LayerView, Press, per_head, recency


@dataclass
class StreamingLLMPress(Press):
    """Keep the first ``protect_first`` sink tokens (4 in the paper) and the most recent ones."""

    protect_first: int = 4
    online = True

    def score(self, view: LayerView) -> Tensor:
        return per_head(recency(view.n, view.keys.device), view.kv_heads)

    def update_online(self, scores: Tensor, attention: Tensor, positions: Tensor) -> Tensor:
        return positions.float()
