"""``random``: a uniformly random subset of the labelled tokens at the same budget (the control a policy must beat)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from tokensift.registry import register
from tokensift.training.methods.base import TokenPolicy
from tokensift.training.stats import TokenStats


@register
@dataclass
class RandomPolicy(TokenPolicy):
    """Fresh random scores per batch from a generator seeded once by ``seed`` (runs repeat exactly)."""

    name: ClassVar[str] = "random"
    summary: ClassVar[str] = "back-propagate a random subset of tokens at the same budget (baseline)"

    ratio: float | None = None
    keep: float | None = None
    keep_tokens: int | None = None
    seed: int = 0
    _generator: torch.Generator | None = field(default=None, init=False, repr=False)

    def scores(self, stats: TokenStats) -> Tensor:
        if self._generator is None:
            self._generator = torch.Generator().manual_seed(self.seed)
        return torch.rand(stats.loss.shape, generator=self._generator)
