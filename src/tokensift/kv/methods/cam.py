"""CaM: cache merging — an evicted token's value is added to the kept token after it.

Zhang et al., 2024, "CaM: Cache Merging for Memory-efficient LLMs Inference" (ICML 2024, PMLR 235): evicting a
pair perturbs every later output by the attention it received; adding its value, scaled by the ratio of its
attention to the receiving token's, to a kept value restores that share of the output's numerator. CaM
merges into the following kept tokens and samples each merge with a probability set by that ratio; this is
the deterministic expectation of that update (ratio capped at 1) into the next kept token
(:func:`tokensift.reduce.kvmerge.add_values`), with the weights from the observation window's attention.
The softmax denominator is not restored (no log mass), which is what separates CaM from ``merge``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor

from tokensift.kv.cache import RaggedLayer
from tokensift.kv.merging import WINDOW, merged_layer
from tokensift.kv.methods.h2o import H2O
from tokensift.kv.press import Press, Wrapper
from tokensift.kv.view import LayerView, Selection
from tokensift.reduce.kvmerge import add_values, next_kept
from tokensift.registry import Paper, register


@register
@dataclass
class CaM(Wrapper):
    """The wrapped press (H2O, as in the paper) picks the kept tokens; evicted values are added to the next kept one."""

    name: ClassVar[str] = "cam"
    paper: ClassVar[Paper] = Paper(
        "Zhang et al., 2024",
        "CaM: Cache Merging for Memory-efficient LLMs Inference",
        venue="ICML 2024, PMLR 235:58840-58850",
        link="https://proceedings.mlr.press/v235/zhang24n.html",
    )
    summary: ClassVar[str] = "evicted values added to the next kept value, scaled by their attention ratio"
    reducer: ClassVar[bool] = True
    reducer_rows: ClassVar[int | None] = WINDOW

    press: Press = field(default_factory=H2O)

    @staticmethod
    def fold(keys: Tensor, values: Tensor, kept: Tensor, weights: Tensor) -> tuple[Tensor, Tensor, None]:
        return keys[kept], add_values(values, kept, weights, next_kept(keys.shape[0], kept)), None

    def build(
        self, keys: Tensor, values: Tensor, selection: list[Selection], views: list[LayerView], starts: list[int]
    ) -> RaggedLayer:
        return merged_layer(keys, values, selection, views, starts, self.fold)
