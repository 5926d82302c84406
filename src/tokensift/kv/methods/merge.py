"""Merge instead of evict, as a reducer around any press: each unselected token joins its most similar kept one.

Wan et al., 2024, "D2O: Dynamic Discriminative Operations for Efficient Long-Context Inference of Large
Language Models" (arXiv:2406.13035) merges each evicted pair into the retained pair whose key is most similar
(cosine), above a threshold, instead of dropping it. Here the fold keeps the attention mass
(:func:`tokensift.reduce.kvmerge.fold_into_kept`): the kept value becomes the attention-weighted mean of its
group and its logit is raised by the log of the mass the group carries, so for the observation window's
attention the layer's output is unchanged. Differences from D2O: its merge weights come from the key
similarity and its threshold is an exponential moving average; here the weights are the window's attention
(what makes the merge exact for it) and ``min_similarity`` is fixed (tokens below it are dropped).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor

from tokensift.kv.cache import RaggedLayer
from tokensift.kv.merging import WINDOW, merged_bytes_fraction, merged_layer
from tokensift.kv.methods.snapkv import SnapKV
from tokensift.kv.press import Press, Wrapper
from tokensift.kv.view import LayerView, Selection
from tokensift.reduce.kvmerge import fold_into_kept, nearest_kept
from tokensift.registry import Paper, option, register


@dataclass
class MassMerging:
    """The mass-preserving merge into the most similar kept key (``min_similarity``: below it, dropped)."""

    min_similarity: float = option(-1.0, low=-1.0, high=1.0)
    reducer: ClassVar[bool] = True
    reducer_rows: ClassVar[int | None] = WINDOW

    def fold(self, keys: Tensor, values: Tensor, kept: Tensor, weights: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        target = nearest_kept(keys, kept, min_similarity=self.min_similarity)
        return fold_into_kept(keys, values, kept, weights, target)

    def build(
        self, keys: Tensor, values: Tensor, selection: list[Selection], views: list[LayerView], starts: list[int]
    ) -> RaggedLayer:
        return merged_layer(keys, values, selection, views, starts, self.fold)

    def keep_for_bytes(self, fraction: float, head_dim: int, itemsize: int) -> float | None:
        return fraction / merged_bytes_fraction(head_dim)


@register
@dataclass
class Merge(MassMerging, Wrapper):
    """The wrapped press picks the kept tokens; every other token is merged into its most similar kept key."""

    name: ClassVar[str] = "merge"
    paper: ClassVar[Paper] = Paper(
        "Wan et al., 2024",
        "D2O: Dynamic Discriminative Operations for Efficient Long-Context Inference of Large Language Models",
        arxiv="2406.13035",
    )
    summary: ClassVar[str] = "unselected tokens merged into the most similar kept key, attention mass kept"

    press: Press = field(default_factory=SnapKV)
