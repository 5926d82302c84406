"""The small LM that scores a prompt, and the map from its tokens to our units.

Scores are per *token* of the scoring model; a unit's value is the sum over the tokens that start inside
it (a word's self-information is the sum of its tokens' — Selective Context's definition).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tokensift.scores.lm import lm_scores
from tokensift.text.units import Segmented

PART_SEPARATOR = "\n\n"


@dataclass
class Scorer:
    """A causal LM with its tokenizer. ``prefix_id`` (BOS) starts every pass; long inputs are scored in
    overlapping windows of ``window`` tokens (default: the model's context)."""

    model: Any
    tokenizer: Any
    prefix_id: int | None = None
    name: str = "model"
    window: int | None = None
    stride: int | None = None

    def encode(self, text: str) -> tuple[Tensor, list[int]]:
        """Token ids of ``text`` and each token's start character."""
        encoding = self.tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
        return torch.tensor(encoding["input_ids"], dtype=torch.long), [int(a) for a, _ in encoding["offset_mapping"]]

    def surprisal(self, ids: Tensor, condition: Tensor | None = None) -> Tensor:
        """``-log p`` of every token of ``ids`` (nats), optionally conditioned on ``condition`` ids."""
        scores = lm_scores(
            self.model, ids, window=self.window, stride=self.stride, prefix_id=self.prefix_id, condition=condition
        )
        return scores.surprisal.nan_to_num(0.0)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


@dataclass
class TokenMap:
    """The scoring text of a segmented input (parts joined by a blank line) and its tokens' units."""

    text: str
    ids: Tensor
    unit_of_token: list[int | None]

    def unit_sums(self, token_values: Tensor, n_units: int) -> list[float]:
        """Sum ``token_values`` into the units their tokens start in."""
        sums = [0.0] * n_units
        for value, unit in zip(token_values.tolist(), self.unit_of_token, strict=True):
            if unit is not None:
                sums[unit] += value
        return sums


def scoring_text(segmented: Segmented) -> tuple[str, list[int]]:
    """Parts joined by :data:`PART_SEPARATOR` and where each part starts in the joined text."""
    offsets, position = [], 0
    for part in segmented.parts:
        offsets.append(position)
        position += len(part) + len(PART_SEPARATOR)
    return PART_SEPARATOR.join(segmented.parts), offsets


def map_tokens(segmented: Segmented, scorer: Scorer) -> TokenMap:
    """Tokenize the scoring text and find the unit each token starts in (None: a separator)."""
    text, offsets = scoring_text(segmented)
    ids, starts = scorer.encode(text)
    unit_starts = [offsets[u.part] + u.start for u in segmented.units]
    unit_ends = [offsets[u.part] + u.end for u in segmented.units]
    owners: list[int | None] = []
    for start in starts:
        index = bisect.bisect_right(unit_starts, start) - 1
        owners.append(index if index >= 0 and start < unit_ends[index] else None)
    return TokenMap(text, ids, owners)


def unit_text(segmented: Segmented, units: Sequence[int]) -> str:
    """The text of some units, in order (e.g. one document or paragraph)."""
    return "".join(segmented.units[i].text for i in units)
