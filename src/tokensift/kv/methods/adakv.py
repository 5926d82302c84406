"""AdaKV: head-adaptive budgets over SnapKV scores.

Feng et al., 2024, "Ada-KV: Optimizing KV Cache Eviction by Adaptive Budget Allocation for Efficient LLM
Inference": the layer's budget is shared by its heads; ranking every (head, token) score together gives
concentrated heads fewer tokens and diffuse heads more (:func:`tokensift.select.head_adaptive_indices`).
With :class:`tokensift.kv.cache.RaggedLayer` each head stores only its own tokens, so the memory really
shrinks (kvpress only masks them).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from tokensift.kv.methods.snapkv import SnapKVPress
from tokensift.kv.press import LayerView, Selection
from tokensift.select import head_adaptive_indices


@dataclass
class AdaKVPress(SnapKVPress):
    """SnapKV scores ranked across the layer's heads; each head keeps at least ``safeguard`` of a uniform share."""

    safeguard: float = 0.2

    def select(self, view: LayerView, scores: Tensor) -> Selection:
        k = self.budget(view)
        first, last = self.protection(k, view.n)
        return head_adaptive_indices(scores, k, safeguard=self.safeguard, protect_first=first, protect_last=last)
