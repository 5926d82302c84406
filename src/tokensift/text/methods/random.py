"""``random``: keep a random set of words at the same exact budget — the baseline every method must beat."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tokensift.registry import register
from tokensift.scores import random_scores
from tokensift.text.methods.base import Job, Prepared, TextMethod
from tokensift.text.units import Granularity, group_units


@register
@dataclass
class RandomMethod(TextMethod):
    """Uniform random value per token (so long and short words are equally likely to stay)."""

    name: ClassVar[str] = "random"
    summary: ClassVar[str] = "keep random words at the same exact budget (baseline)"

    seed: int = 0
    granularity: Granularity = "word"
    needs_model: ClassVar[bool] = False

    def prepare(self, job: Job) -> Prepared:
        noise = random_scores((len(job.segmented.units),), seed=self.seed)
        values = [float(n) * cost for n, cost in zip(noise.tolist(), job.fitter.costs, strict=True)]
        return Prepared(values, group_units(job.segmented, self.granularity))
