"""What every text method is: budget-independent scoring (``prepare``) and a budgeted choice (``choose``).

Splitting the two lets a caller score once and compress to several budgets; methods whose scores depend
on the budget (LLMLingua's iterative pass) do that work in ``choose``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tokensift.errors import ModelError
from tokensift.registry import Paper, validate
from tokensift.text.budget import BudgetFitter, Selection
from tokensift.text.scoring import Scorer
from tokensift.text.units import Segmented


@dataclass
class Job:
    """One input to compress: its units, the exact-budget fitter, the scoring LM and the question."""

    segmented: Segmented
    fitter: BudgetFitter
    scorer: Scorer | None
    question: str | None = None

    def model(self) -> Scorer:
        if self.scorer is None:
            raise ModelError("this method needs a scoring language model")
        return self.scorer


@dataclass
class Prepared:
    """A method's budget-independent work: a value per unit, the lexical items it selects, extra state."""

    values: list[float]
    items: list[list[int]]
    state: dict[str, Any] = field(default_factory=dict)


class TextMethod(ABC):
    """A prompt-compression method; subclasses are registered dataclasses holding the paper's options."""

    target: ClassVar[str] = "text"
    name: ClassVar[str] = ""
    paper: ClassVar[Paper | None] = None
    summary: ClassVar[str] = ""
    needs_model: ClassVar[bool] = True

    def __post_init__(self) -> None:
        validate(self)

    def spec(self) -> str:
        """The method's name as a composition (``coarse:lingua2``)."""
        press = getattr(self, "press", None)
        return self.name if press is None else f"{self.name}:{press.spec()}"

    def load(self) -> None:
        """Load what scoring needs besides the LM (a classifier's weights), so compressions time only work."""
        return None

    def uses_model(self) -> bool:
        """Whether compression runs the scoring LM (a wrapper asks what it wraps)."""
        return self.needs_model

    @abstractmethod
    def prepare(self, job: Job) -> Prepared:
        """Score the units (no budget yet)."""

    def choose(self, job: Job, prepared: Prepared, budget: int) -> Selection:
        """Keep the most valuable items within ``budget`` tokens (exact, see :mod:`tokensift.text.budget`)."""
        return job.fitter.select(prepared.items, prepared.values, budget)
