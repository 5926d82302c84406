"""``eslm``: risk-averse selective language modelling — keep the upper tail of per-token loss or entropy.

Bal, Cevher and Muehlebach, 2025, "ESLM: Risk-Averse Selective Language Modeling for Efficient Pretraining"
(arXiv:2505.19893). Per batch, the value-at-risk of the token scores at confidence ``alpha = 1 - keep`` is the
threshold; tokens at or above it are trained. With ``score="loss"`` the trained objective is the mean loss of
that tail, the conditional value-at-risk (the paper's link to distributionally robust optimisation); with
``score="entropy"`` the tail is the model's most uncertain predictions. The paper keeps every token tied at
the threshold; here ties at the threshold are broken by position so the budget is exact (they differ only
when scores tie exactly). Ada-ESLM's schedule for ``alpha`` is not implemented.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from torch import Tensor

from tokensift.registry import Paper, register
from tokensift.training.methods.base import TokenPolicy
from tokensift.training.stats import TokenStats


@register
@dataclass
class ESLM(TokenPolicy):
    """Tokens whose ``score`` is at or above the batch's VaR at ``1 - keep``."""

    name: ClassVar[str] = "eslm"
    paper: ClassVar[Paper] = Paper(
        "Bal et al., 2025",
        "ESLM: Risk-Averse Selective Language Modeling for Efficient Pretraining",
        arxiv="2505.19893",
    )
    summary: ClassVar[str] = "keep the batch's upper tail (value-at-risk) of token loss or entropy"

    ratio: float | None = None
    keep: float | None = None
    keep_tokens: int | None = None
    score: Literal["loss", "entropy"] = "loss"

    def scores(self, stats: TokenStats) -> Tensor:
        return stats.loss if self.score == "loss" else stats.entropy
