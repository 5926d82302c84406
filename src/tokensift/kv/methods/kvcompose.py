"""KVCompose: head-wise selections aligned into composite tokens, with one budget for every layer.

Akulov et al., 2025, "KVCompose: Efficient Structured KV Cache Compression with Composite Tokens"
(arXiv:2509.05165). Head-wise budgets (AdaKV, KVzip) keep more than uniform ones but give every head its own
length, which inference engines' dense caches cannot hold. KVCompose lets each head pick its own tokens from
the wrapped press's attention scores, then aligns them by rank into composite tokens — the ``i``-th best token
of every head — so every head of a layer holds the same number; the composites of all layers are ranked
together (:func:`tokensift.select.composite_indices`), so informative layers keep more. Each layer's cache is
an ordinary dense ``[B, Hkv, L_layer, D]`` tensor: :func:`tokensift.kv.cache.dense_cache` turns it into a
transformers ``DynamicCache`` that ``model.generate()`` decodes from without any tokensift attention
(attention does not depend on the order of keys that already carry their rotary positions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor

from tokensift.kv.methods.snapkv import SnapKV
from tokensift.kv.press import Press, Wrapper
from tokensift.kv.view import LayerView, Selection
from tokensift.registry import Paper, register
from tokensift.select import composite_indices


@register
@dataclass
class KVCompose(Wrapper):
    """Composite tokens from the wrapped press's per-head scores (SnapKV's attention by default), one budget for
    all layers, every head of a layer the same length."""

    name: ClassVar[str] = "kvcompose"
    paper: ClassVar[Paper] = Paper(
        "Akulov et al., 2025",
        "KVCompose: Efficient Structured KV Cache Compression with Composite Tokens",
        arxiv="2509.05165",
    )
    summary: ClassVar[str] = "head-wise picks aligned into composite tokens; global layer budget; dense cache"
    model_wide: ClassVar[bool] = True

    press: Press = field(default_factory=SnapKV)

    def select_layers(self, views: dict[int, LayerView], scores: dict[int, Tensor]) -> dict[int, Selection]:
        order = sorted(views)
        k = self.budget(views[order[0]])
        first, last = self.protection(k, views[order[0]].n)
        chosen = composite_indices([scores[layer] for layer in order], k, protect_first=first, protect_last=last)
        return dict(zip(order, chosen, strict=True))
