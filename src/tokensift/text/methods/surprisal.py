"""``surprisal``: one LM pass, keep the words with the most self-information under the budget.

Self-information ``-log p(x_t | x_<t)`` as the measure of what a reader could not have guessed (Shannon;
used for prompts by Li et al., 2023, Selective Context, arXiv:2310.06201, and Jiang et al., 2023,
LLMLingua). A word's value is the sum over its tokens; the exact knapsack keeps the most information per
target token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tokensift.registry import Paper, register
from tokensift.text.methods.base import Job, Prepared, TextMethod
from tokensift.text.scoring import map_tokens
from tokensift.text.units import group_units


def unit_surprisal(job: Job) -> list[float]:
    """Self-information of every unit of the input (sum over its tokens), from one windowed LM pass."""
    scorer = job.model()
    tokens = map_tokens(job.segmented, scorer)
    return tokens.unit_sums(scorer.surprisal(tokens.ids), len(job.segmented.units))


@register
@dataclass
class SurprisalMethod(TextMethod):
    """Word-level surprisal, one pass."""

    name: ClassVar[str] = "surprisal"
    paper: ClassVar[Paper] = Paper(
        "Li et al., 2023",
        "Compressing Context to Enhance Inference Efficiency of Large Language Models",
        arxiv="2310.06201",
    )
    summary: ClassVar[str] = "one LM pass; keep the words with the most self-information"

    def prepare(self, job: Job) -> Prepared:
        return Prepared(unit_surprisal(job), group_units(job.segmented, "word"))
