"""SnapKV: the attention of an observation window at the end of the prompt, pooled.

Li et al., 2024, "SnapKV: LLM Knows What You are Looking for Before Generation" (arXiv:2404.14469): the
last ``window`` queries (the question, when it ends the prompt) attend to what generation will need;
their attention, averaged over the window and smoothed with a pooling kernel so neighbours are kept
together, picks the tokens each head keeps. The window itself is always kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from tokensift.errors import ParameterError
from tokensift.kv.press import ScorerPress
from tokensift.kv.view import LayerView, last_queries
from tokensift.registry import Paper, option, register
from tokensift.scores import attention_received, pool_scores


@register
@dataclass
class SnapKV(ScorerPress):
    """Observation window of ``window`` queries (kept), pooling ``kernel`` wide."""

    name: ClassVar[str] = "snapkv"
    paper: ClassVar[Paper] = Paper(
        "Li et al., 2024", "SnapKV: LLM Knows What You are Looking for Before Generation", arxiv="2404.14469"
    )
    summary: ClassVar[str] = "observation-window attention, pooled; window kept"
    query_rows = None

    window: int = option(32, low=1)
    kernel: int = option(7, low=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kernel % 2 == 0:
            raise ParameterError(
                f"snapkv option kernel must be odd (a centred pooling window), got {self.kernel}", option="kernel"
            )
        self.protect_last = max(self.protect_last, self.window)

    @property
    def rows_wanted(self) -> int | None:
        """Only the observation window's rows are read."""
        return self.window

    def score(self, view: LayerView) -> Tensor:
        rows = last_queries(view, self.window)
        received = attention_received(rows, view.keys, scaling=view.scaling)[0]
        return pool_scores(received, self.kernel)
