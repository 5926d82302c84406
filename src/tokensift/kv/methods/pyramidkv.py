"""PyramidKV: SnapKV scores with layer budgets that shrink with depth.

Cai et al., 2024, "PyramidKV: Dynamic KV Cache Compression based on Pyramidal Information Funneling":
attention is spread widely in lower layers and concentrated in upper ones, so lower layers keep more
tokens and upper layers fewer, the total staying that of a uniform budget
(:func:`tokensift.select.pyramid_budgets`).
"""

from __future__ import annotations

from dataclasses import dataclass

from tokensift.kv.methods.snapkv import SnapKVPress
from tokensift.kv.press import LayerView
from tokensift.select import pyramid_budgets


@dataclass
class PyramidKVPress(SnapKVPress):
    """SnapKV per layer with a linear pyramid of budgets (``beta``: top/bottom ratio control, 20 in the paper)."""

    beta: float = 20.0

    def budget(self, view: LayerView) -> int:
        uniform = super().budget(view)
        return pyramid_budgets(view.n_layers, uniform, view.n, window=self.window, beta=self.beta)[view.layer]
