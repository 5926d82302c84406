"""PyramidKV: layer budgets that shrink with depth, over any press's scores.

Cai et al., 2024, "PyramidKV: Dynamic KV Cache Compression based on Pyramidal Information Funneling"
(arXiv:2406.02069): attention is spread widely in lower layers and concentrated in upper ones, so lower
layers keep more tokens and upper layers fewer, the total staying that of a uniform budget
(:func:`tokensift.select.pyramid_budgets`). The paper scores with SnapKV; the tokens the wrapped press
always keeps at the end (SnapKV's window) are the pyramid's floor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from tokensift.kv.methods.snapkv import SnapKV
from tokensift.kv.press import Press, Wrapper
from tokensift.kv.view import LayerView
from tokensift.registry import Paper, option, register
from tokensift.select import pyramid_budgets


@register
@dataclass
class PyramidKV(Wrapper):
    """A linear pyramid of layer budgets (``beta``: top/bottom ratio control, 20 in the paper)."""

    name: ClassVar[str] = "pyramidkv"
    paper: ClassVar[Paper] = Paper(
        "Cai et al., 2024",
        "PyramidKV: Dynamic KV Cache Compression based on Pyramidal Information Funneling",
        arxiv="2406.02069",
    )
    summary: ClassVar[str] = "layer budgets shrinking with depth, same total"

    press: Press = field(default_factory=SnapKV)
    beta: float = option(20.0, low=1.0)

    def budget(self, view: LayerView) -> int:
        uniform = self.press.budget(view)
        floor = self.scorer.protect_last
        return pyramid_budgets(view.n_layers, uniform, view.n, window=floor, beta=self.beta)[view.layer]
