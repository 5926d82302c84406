"""``selective_context``: self-information of lexical units (Li et al., 2023, "Compressing Context to
Enhance Inference Efficiency of Large Language Models", EMNLP, arXiv:2310.06201).

The paper scores tokens by self-information with a causal LM, merges them into lexical units (tokens,
noun phrases or sentences; a unit's self-information is the sum of its tokens') and drops the units
below a percentile. We keep the same scores and units (phrases by a light chunker, no spaCy) but select
with an exact knapsack over target-tokenizer costs instead of the percentile, so the budget is met.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tokensift.registry import Paper, register
from tokensift.text.methods.base import Job, Prepared, TextMethod
from tokensift.text.methods.surprisal import unit_surprisal
from tokensift.text.units import Granularity, group_units


@register
@dataclass
class SelectiveContextMethod(TextMethod):
    """Lexical units at ``granularity`` (the paper's best results were at phrase level)."""

    name: ClassVar[str] = "selective_context"
    paper: ClassVar[Paper] = Paper(
        "Li et al., 2023",
        "Compressing Context to Enhance Inference Efficiency of Large Language Models",
        arxiv="2310.06201",
    )
    summary: ClassVar[str] = "self-information of lexical units (phrases / sentences), exact budget"

    granularity: Granularity = "phrase"

    def prepare(self, job: Job) -> Prepared:
        return Prepared(unit_surprisal(job), group_units(job.segmented, self.granularity))
