"""``attribution``: FrugalPrompt-style token attribution (Raiyan et al., 2025, "FrugalPrompt: Reducing
Contextual Overhead in Large Language Models via Token Attribution", arXiv:2510.16439).

FrugalPrompt ranks tokens by an attribution score and keeps the top ones in their original order. We
use gradient x input toward the model's own continuation: the small LM reads the text (and the question,
if any), greedily continues it for ``continuation_tokens`` tokens, and each input token scores
``|d log p(continuation) / d embedding . embedding|``. Long inputs are attributed window by window.
A word's value is the sum over its tokens; the exact knapsack keeps the most attributed words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from tokensift.errors import ParameterError
from tokensift.registry import Paper, option, register
from tokensift.scores.gradient import gradient_x_input, greedy_continuation
from tokensift.scores.lm import plan_windows
from tokensift.text.methods.base import Job, Prepared, TextMethod
from tokensift.text.scoring import map_tokens
from tokensift.text.units import group_units


@register
@dataclass
class AttributionMethod(TextMethod):
    """Gradient x input toward a greedy continuation, in windows of ``window`` tokens."""

    name: ClassVar[str] = "attribution"
    paper: ClassVar[Paper] = Paper(
        "Raiyan et al., 2025",
        "FrugalPrompt: Reducing Contextual Overhead in Large Language Models via Token Attribution",
        arxiv="2510.16439",
    )
    summary: ClassVar[str] = "gradient x input toward the model's own continuation (FrugalPrompt-style)"

    continuation_tokens: int = option(8, low=1)
    window: int = option(1024, low=2)

    def prepare(self, job: Job) -> Prepared:
        scorer = job.model()
        tokens = map_tokens(job.segmented, scorer)
        head = torch.tensor([] if scorer.prefix_id is None else [scorer.prefix_id], dtype=torch.long)
        tail = scorer.encode("\n\n" + job.question)[0] if job.question else torch.zeros(0, dtype=torch.long)
        scores = torch.zeros(int(tokens.ids.shape[0]))
        context = int(getattr(scorer.model.config, "max_position_embeddings", 0) or 0)
        reserved = len(head) + len(tail) + self.continuation_tokens
        window = min(self.window, context - reserved) if context else self.window
        if window < 2:
            raise ParameterError(f"the question leaves no room for text in the model's context of {context} tokens")
        for start, stop, first in plan_windows(int(tokens.ids.shape[0]), window, window):
            read = torch.cat([head, tokens.ids[start:stop], tail])
            target = greedy_continuation(scorer.model, read, self.continuation_tokens)
            attributed = gradient_x_input(scorer.model, read, target)
            scores[first:stop] = attributed[len(head) + first - start : len(head) + stop - start]
        values = tokens.unit_sums(scores, len(job.segmented.units))
        return Prepared(values, group_units(job.segmented, "word"))
