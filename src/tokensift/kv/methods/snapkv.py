"""SnapKV: the attention of an observation window at the end of the prompt, pooled.

Li et al., 2024, "SnapKV: LLM Knows What You are Looking for Before Generation": the last ``window``
queries (the question, when it ends the prompt) attend to what generation will need; their attention,
averaged over the window and smoothed with a pooling kernel so neighbours are kept together, picks the
tokens each head keeps. The window itself is always kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from tokensift.kv.press import LayerView, Press, last_queries
from tokensift.scores import attention_received, pool_scores


@dataclass
class SnapKVPress(Press):
    """Observation window of ``window`` queries (kept), pooling ``kernel`` wide."""

    window: int = 32
    kernel: int = 7
    query_rows = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.protect_last = max(self.protect_last, self.window)

    def score(self, view: LayerView) -> Tensor:
        rows = last_queries(view, self.window)
        received = attention_received(rows, view.keys, scaling=view.scaling)[0]
        return pool_scores(received, self.kernel)
