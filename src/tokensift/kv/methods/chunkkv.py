"""ChunkKV: keep whole chunks, with the chosen indices reused by the next layer.

Liu et al., 2025, "ChunkKV: Semantic-Preserving KV Cache Compression for Efficient Long-Context LLM
Inference" (arXiv:2502.00299): score tokens with the wrapped press (SnapKV's pooled observation-window
attention in the paper), sum over the layer's heads, keep whole chunks of ``chunk`` tokens
(:func:`tokensift.select.chunk_indices`), all heads the same; adjacent layers select similar chunks, so
each selection is reused for ``reuse`` layers (when their budgets agree).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor

from tokensift.kv.methods.snapkv import SnapKV
from tokensift.kv.press import Press, Wrapper
from tokensift.kv.view import LayerView, Selection
from tokensift.registry import Paper, option, register
from tokensift.select import chunk_indices


@register
@dataclass
class ChunkKV(Wrapper):
    """Chunks of ``chunk`` tokens (10 in the paper) ranked by the wrapped press's scores, index reuse over
    ``reuse`` layers."""

    name: ClassVar[str] = "chunkkv"
    paper: ClassVar[Paper] = Paper(
        "Liu et al., 2025",
        "ChunkKV: Semantic-Preserving KV Cache Compression for Efficient Long-Context LLM Inference",
        arxiv="2502.00299",
    )
    summary: ClassVar[str] = "whole chunks by the wrapped press's scores, indices reused across layer pairs"

    press: Press = field(default_factory=SnapKV)
    chunk: int = option(10, low=1)
    reuse: int = option(2, low=1)
    _reused: dict[int, tuple[int, int, Tensor]] = field(default_factory=dict, init=False, repr=False)

    def select(self, view: LayerView, scores: Tensor, k: int) -> Selection:
        previous = self._reused.get(view.row)
        if previous is not None and view.layer % self.reuse and previous[:2] == (view.layer - 1, k):
            indices = previous[2]
        else:
            first, last = self.protection(k, view.n)
            indices = chunk_indices(scores.sum(0), k, self.chunk, protect_first=first, protect_last=last)
        self._reused[view.row] = (view.layer, k, indices)
        return [indices] * view.kv_heads
