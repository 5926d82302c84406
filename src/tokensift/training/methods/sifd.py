"""``sifd``: Selective IFD — IFD over the response tokens the instruction actually changes (T-SHIRT's score).

Fu, Hamman and Dutta, 2025, "T-SHIRT: Token-Selective Hierarchical Data Selection for Instruction Tuning"
(arXiv:2506.01317). A token's informativeness is how much the instruction moves its loss,
``|loss alone - loss after the instruction|``; plain IFD averages over every token, so a response whose
tokens barely depend on the instruction can still score near 1. S-IFD keeps the ``token_keep`` most
informative response tokens (at least one) and computes IFD over them only. As with ``ifd``, S-IFD >= 1
ranks last. The paper's second stage (preferring examples whose perturbed neighbours score alike) is not
implemented here: each example is scored once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from tokensift.registry import Paper, option, register
from tokensift.training.methods.data import DataScore, DataScorer, ratio_of_perplexities


@register
@dataclass
class SelectiveIFD(DataScorer):
    """IFD over the top ``token_keep`` of response tokens by ``|delta loss|``."""

    name: ClassVar[str] = "sifd"
    paper: ClassVar[Paper] = Paper(
        "Fu et al., 2025",
        "T-SHIRT: Token-Selective Hierarchical Data Selection for Instruction Tuning",
        arxiv="2506.01317",
    )
    summary: ClassVar[str] = "IFD over the response tokens the instruction changes most (T-SHIRT's S-IFD)"

    token_keep: float = option(0.5, low=0.0, high=1.0, open_low=True)

    def score(self, conditional: Tensor, unconditional: Tensor) -> DataScore:
        delta = (unconditional - conditional).abs()
        k = max(1, round(self.token_keep * delta.numel()))
        chosen = torch.sort(torch.sort(delta, descending=True, stable=True).indices[:k]).values
        value = ratio_of_perplexities(conditional[chosen], unconditional[chosen])
        ifd = ratio_of_perplexities(conditional, unconditional)
        return DataScore(value if value < 1.0 else -value, ifd, chosen.tolist())
