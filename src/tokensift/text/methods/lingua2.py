"""``lingua2``: a distilled keep/drop word classifier on a small encoder (Pan et al., 2024, "LLMLingua-2: Data
Distillation for Efficient and Faithful Task-Agnostic Prompt Compression", arXiv:2403.12968).

The paper trains a bidirectional encoder to label each token keep or drop and keeps the most probable
ones; it needs no causal LM at compression time, so it is several times faster than LLMLingua. Ours is
the embedded all-MiniLM-L6-v2 with a trained head (:mod:`tokensift.text.lingua2`); a word's value is its
keep probability times its cost in target tokens, so the exact knapsack keeps the most probable words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tokensift.registry import Paper, register
from tokensift.text.lingua2 import load_classifier
from tokensift.text.methods.base import Job, Prepared, TextMethod
from tokensift.text.units import Granularity, group_units


@register
@dataclass
class Lingua2Method(TextMethod):
    """Keep probabilities from the classifier (``weights``: the bundled head or a path to one)."""

    name: ClassVar[str] = "lingua2"
    paper: ClassVar[Paper] = Paper(
        "Pan et al., 2024",
        "LLMLingua-2: Data Distillation for Efficient and Faithful Task-Agnostic Prompt Compression",
        arxiv="2403.12968",
    )
    summary: ClassVar[str] = "distilled keep/drop word classifier on MiniLM; no LM pass when compressing"
    needs_model: ClassVar[bool] = False

    weights: str = "bundled"
    granularity: Granularity = "word"

    def load(self) -> None:
        load_classifier(self.weights)

    def prepare(self, job: Job) -> Prepared:
        classifier = load_classifier(self.weights)
        units = job.segmented.units
        probabilities = classifier.probabilities([u.text for u in units])
        values = [p * c if u.droppable else 0.0 for p, c, u in zip(probabilities, job.fitter.costs, units, strict=True)]
        return Prepared(values, group_units(job.segmented, self.granularity), {"probabilities": probabilities})
