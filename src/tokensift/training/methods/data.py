"""What a data scorer is: an example's per-token losses with and without its instruction in, one score out.

Used by ``tokensift score-data`` to rank instruction-tuning rows (higher = more worth training on). The
two loss vectors cover the same response tokens: ``conditional`` after the instruction, ``unconditional``
after an empty user turn.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from tokensift.registry import Paper, validate


@dataclass
class DataScore:
    """``value`` ranks the example; ``ifd`` is its plain IFD; ``tokens`` the response positions it counted."""

    value: float
    ifd: float
    tokens: list[int]


def ratio_of_perplexities(conditional: Tensor, unconditional: Tensor) -> float:
    """``PPL(response | instruction) / PPL(response)`` over the given tokens: ``exp(mean(cond) - mean(uncond))``."""
    return math.exp(float(conditional.double().mean() - unconditional.double().mean()))


class DataScorer(ABC):
    """A token-level data scoring method for ``score-data``; registered dataclasses under the training target."""

    target: ClassVar[str] = "training"
    name: ClassVar[str] = ""
    paper: ClassVar[Paper | None] = None
    summary: ClassVar[str] = ""

    def __post_init__(self) -> None:
        validate(self)

    @abstractmethod
    def score(self, conditional: Tensor, unconditional: Tensor) -> DataScore:
        """Score one example from its response tokens' losses ``[n]`` with and without the instruction."""
