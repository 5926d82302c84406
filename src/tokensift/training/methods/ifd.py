"""``ifd``: Instruction-Following Difficulty — how little the instruction helps the model predict the response.

Li et al., 2023, "From Quantity to Quality: Boosting LLM Performance with Self-Guided Data Selection for
Instruction Tuning" (arXiv:2308.12032). IFD is the ratio of the response's perplexity given the instruction
to its perplexity alone; high IFD = the instruction does not make the answer easy = worth training on. The
paper discards examples with IFD >= 1 (the instruction does not help at all: misaligned pairs); here they
rank below every other example (score ``-IFD``), so ``--keep`` reaches them only when it must.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from tokensift.registry import Paper, register
from tokensift.training.methods.data import DataScore, DataScorer, ratio_of_perplexities


@register
@dataclass
class IFD(DataScorer):
    """Plain IFD over every response token."""

    name: ClassVar[str] = "ifd"
    paper: ClassVar[Paper] = Paper(
        "Li et al., 2023",
        "From Quantity to Quality: Boosting LLM Performance with Self-Guided Data Selection for Instruction Tuning",
        arxiv="2308.12032",
    )
    summary: ClassVar[str] = "rank examples by instruction-following difficulty (response perplexity ratio)"

    def score(self, conditional: Tensor, unconditional: Tensor) -> DataScore:
        ifd = ratio_of_perplexities(conditional, unconditional)
        return DataScore(ifd if ifd < 1.0 else -ifd, ifd, list(range(conditional.numel())))
