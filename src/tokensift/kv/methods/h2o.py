"""H2O: heavy hitters (accumulated attention) plus recent tokens.

Zhang et al., 2023, "H2O: Heavy-Hitter Oracle for Efficient Generative Inference of Large Language
Models": a few tokens receive most of the attention summed over all queries; the cache keeps those heavy
hitters and a window of recent tokens, half the budget each. The sum updates online while decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from tokensift.kv.press import LayerView, Press, Selection
from tokensift.scores import attention_received
from tokensift.select import topk_indices


@dataclass
class H2OPress(Press):
    """Accumulated attention over every query row; ``recent_share`` of the budget goes to recent tokens."""

    recent_share: float = 0.5
    forgetting: float = 1.0
    query_rows = None
    online = True

    def score(self, view: LayerView) -> Tensor:
        return attention_received(view.queries, view.keys, scaling=view.scaling, forgetting=self.forgetting)[0]

    def choose(self, scores: Tensor, k: int) -> Selection:
        first, last = self.protection(k, scores.shape[-1])
        last = max(last, min(k - first, round(self.recent_share * k)))
        return list(topk_indices(scores, k, protect_first=first, protect_last=last))

    def update_online(self, scores: Tensor, attention: Tensor, positions: Tensor) -> Tensor:
        return self.forgetting * scores + attention
