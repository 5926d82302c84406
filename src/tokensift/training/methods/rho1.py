"""``rho1``: Selective Language Modeling — train on the tokens with the highest excess loss over a reference model.

Lin et al., 2024, "Rho-1: Not All Tokens Are What You Need" (arXiv:2404.07965). A token's score is the
current model's loss minus a reference model's loss on it: tokens the reference finds easy but the model
does not are the ones worth learning; tokens both find hard (noise) or both find easy are skipped. The top
``keep`` of a batch's tokens are trained, the loss averaged over them. The paper trains its reference on
curated data; here any model can be the reference, and the trainer defaults to the starting checkpoint
(frozen), which makes the score "how much worse than where it started" — say which one you used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from tokensift.registry import Paper, register
from tokensift.training.methods.base import TokenPolicy
from tokensift.training.stats import TokenStats


@register
@dataclass
class Rho1(TokenPolicy):
    """Top-``keep`` excess loss ``loss - reference`` per batch."""

    name: ClassVar[str] = "rho1"
    paper: ClassVar[Paper] = Paper("Lin et al., 2024", "Rho-1: Not All Tokens Are What You Need", arxiv="2404.07965")
    summary: ClassVar[str] = "keep the tokens with the highest excess loss over a reference model"
    needs_reference: ClassVar[bool] = True

    ratio: float | None = None
    keep: float | None = None
    keep_tokens: int | None = None

    def scores(self, stats: TokenStats) -> Tensor:
        assert stats.reference is not None  # checked by select()
        return stats.loss - stats.reference
