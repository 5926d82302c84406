"""``none``: every labelled token is trained (the plain causal-LM loss), the reference every policy is measured by."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from tokensift.registry import register
from tokensift.select import Budget
from tokensift.training.methods.base import TokenPolicy
from tokensift.training.stats import TokenStats


@register
@dataclass
class NoSelection(TokenPolicy):
    """Keeps every token whatever budget is given, so ``--policy none`` is the full-loss run."""

    name: ClassVar[str] = "none"
    summary: ClassVar[str] = "train on every labelled token (full loss, baseline)"
    in_default_bench: ClassVar[bool] = False  # the benchmark's ``full`` row

    ratio: float | None = None
    keep: float | None = None
    keep_tokens: int | None = None

    @property
    def budgeted(self) -> Budget:
        return Budget()

    def scores(self, stats: TokenStats) -> Tensor:
        return stats.valid.float()
