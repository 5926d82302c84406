"""What a token-selection policy for training is: per-token statistics in, a 0/1 weight per token out.

A policy reads a batch's :class:`~tokensift.training.stats.TokenStats` and keeps a budget of the tokens that
carry a label, counted over the whole batch (Rho-1 and ESLM select per batch, not per row). The budget is the
project's one convention (``keep`` kept, ``ratio`` removed, ``keep_tokens`` absolute); with none given a
policy keeps ``default_keep`` (0.6, the ratio Rho-1 reports best).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import Tensor

from tokensift.errors import ParameterError
from tokensift.registry import Paper, validate
from tokensift.select import Budget
from tokensift.training.stats import TokenStats


class TokenPolicy(ABC):
    """A per-token loss selection policy; subclasses are registered dataclasses holding the paper's options."""

    target: ClassVar[str] = "training"
    name: ClassVar[str] = ""
    paper: ClassVar[Paper | None] = None
    summary: ClassVar[str] = ""
    needs_reference: ClassVar[bool] = False
    """Whether :meth:`scores` reads ``stats.reference`` (a reference model's per-token loss)."""
    default_keep: ClassVar[float] = 0.6
    in_default_bench: ClassVar[bool] = True
    """Whether ``bench training`` runs it when no ``--methods`` are given (``none`` is the ``full`` row anyway)."""

    ratio: float | None
    keep: float | None
    keep_tokens: int | None

    def __post_init__(self) -> None:
        validate(self)
        Budget(self.ratio, self.keep, self.keep_tokens)  # checks the budget fields now, not at the first batch

    @property
    def budgeted(self) -> Budget:
        """The budget as given, or ``keep=default_keep`` when none is."""
        if self.ratio is None and self.keep is None and self.keep_tokens is None:
            return Budget(keep=self.default_keep)
        return Budget(self.ratio, self.keep, self.keep_tokens)

    @abstractmethod
    def scores(self, stats: TokenStats) -> Tensor:
        """``[B, T-1]`` scores, higher = back-propagate; only valid entries are compared."""

    def select(self, stats: TokenStats) -> Tensor:
        """``[B, T-1]`` boolean mask of the tokens whose loss is kept: the top of :meth:`scores` under the budget.

        Ties are broken by position (earlier first), so the count is exact: ``budget.tokens(valid tokens)``.
        """
        if self.needs_reference and stats.reference is None:
            raise ParameterError(f"{self.name} needs a reference model's per-token losses (stats.reference)")
        valid = stats.valid
        n = int(valid.sum())
        mask = torch.zeros_like(valid)
        if n == 0:
            return mask
        k = min(self.budgeted.tokens(n), n)
        flat = torch.where(valid, self.scores(stats).float(), torch.full_like(stats.loss, -torch.inf)).reshape(-1)
        order = torch.sort(flat, descending=True, stable=True).indices[:k]
        mask.view(-1)[order] = True
        return mask
