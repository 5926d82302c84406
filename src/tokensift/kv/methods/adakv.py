"""AdaKV: the layer's budget shared adaptively by its heads, over any press's scores.

Feng et al., 2024, "Ada-KV: Optimizing KV Cache Eviction by Adaptive Budget Allocation for Efficient LLM
Inference" (arXiv:2407.11550): ranking every (head, token) score of a layer together gives concentrated
heads fewer tokens and diffuse heads more (:func:`tokensift.select.head_adaptive_indices`). The paper
uses SnapKV's scores; ``AdaKV(press=KeyDiff())`` (``adakv:keydiff``) uses any other. With
:class:`tokensift.kv.cache.RaggedLayer` each head stores only its own tokens, so the memory really
shrinks (kvpress only masks them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor

from tokensift.kv.methods.snapkv import SnapKV
from tokensift.kv.press import Press, Wrapper
from tokensift.kv.view import LayerView, Selection
from tokensift.registry import Paper, option, register
from tokensift.select import head_adaptive_indices


@register
@dataclass
class AdaKV(Wrapper):
    """The wrapped press's scores ranked across the layer's heads; each head keeps at least ``safeguard`` of a
    uniform share."""

    name: ClassVar[str] = "adakv"
    paper: ClassVar[Paper] = Paper(
        "Feng et al., 2024",
        "Ada-KV: Optimizing KV Cache Eviction by Adaptive Budget Allocation for Efficient LLM Inference",
        arxiv="2407.11550",
    )
    summary: ClassVar[str] = "budget shared adaptively across a layer's heads (ragged cache)"

    press: Press = field(default_factory=SnapKV)
    safeguard: float = option(0.2, low=0.0, high=1.0)

    def select(self, view: LayerView, scores: Tensor, k: int) -> Selection:
        first, last = self.protection(k, view.n)
        return head_adaptive_indices(scores, k, safeguard=self.safeguard, protect_first=first, protect_last=last)
