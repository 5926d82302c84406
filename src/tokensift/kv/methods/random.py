"""Random eviction: the baseline every method must beat (e.g. the control in Li et al., 2024, SnapKV)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from tokensift.kv.press import LayerView, Press
from tokensift.scores import random_scores


@dataclass
class RandomPress(Press):
    """Keep a uniformly random subset of each head's tokens (reproducible from ``seed``, layer and row)."""

    seed: int = 0

    def score(self, view: LayerView) -> Tensor:
        return random_scores((view.kv_heads, view.n), seed=self.seed * 100_003 + view.layer * 1_009 + view.row)
