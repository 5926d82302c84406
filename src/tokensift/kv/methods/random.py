"""Random eviction: the baseline every method must beat (e.g. the control in Li et al., 2024, SnapKV)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from tokensift.kv.press import ScorerPress
from tokensift.kv.view import LayerView
from tokensift.registry import register
from tokensift.scores import random_scores


@register
@dataclass
class RandomPress(ScorerPress):
    """Keep a uniformly random subset of each head's tokens (reproducible from ``seed`` and the layer; each row of a
    batch is drawn as if it ran alone)."""

    name: ClassVar[str] = "random"
    summary: ClassVar[str] = "keep a uniformly random subset of tokens (the baseline every method must beat)"

    seed: int = 0

    def score(self, view: LayerView) -> Tensor:
        return random_scores((view.kv_heads, view.n), seed=self.seed * 100_003 + view.layer * 1_009)
