"""H2O: heavy hitters (accumulated attention) plus recent tokens.

Zhang et al., 2023, "H2O: Heavy-Hitter Oracle for Efficient Generative Inference of Large Language
Models" (arXiv:2306.14048): a few tokens receive most of the attention summed over all queries; the
cache keeps those heavy hitters and a window of recent tokens, half the budget each. The sum updates
online while decoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from tokensift.kv.press import ScorerPress
from tokensift.kv.view import LayerView
from tokensift.registry import Paper, option, register
from tokensift.scores import attention_received


@register
@dataclass
class H2O(ScorerPress):
    """Accumulated attention over every query row; ``recent_share`` of the budget goes to recent tokens."""

    name: ClassVar[str] = "h2o"
    paper: ClassVar[Paper] = Paper(
        "Zhang et al., 2023",
        "H2O: Heavy-Hitter Oracle for Efficient Generative Inference of Large Language Models",
        arxiv="2306.14048",
    )
    summary: ClassVar[str] = "heavy hitters (accumulated attention) + recent half"
    query_rows = None
    online = True

    recent_share: float = option(0.5, low=0.0, high=1.0)
    forgetting: float = option(1.0, low=0.0, high=1.0, open_low=True)

    def score(self, view: LayerView) -> Tensor:
        return attention_received(view.queries, view.keys, scaling=view.scaling, forgetting=self.forgetting)[0]

    def protection(self, k: int, n: int) -> tuple[int, int]:
        """The protected tokens, and at least ``recent_share`` of the budget for the most recent ones."""
        first, last = super().protection(k, n)
        return first, max(last, min(k - first, round(self.recent_share * k)))

    def update_online(self, scores: Tensor, attention: Tensor, positions: Tensor) -> Tensor:
        return self.forgetting * scores + attention
