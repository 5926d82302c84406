"""ChunkKV: keep whole chunks, with the chosen indices reused by the next layer.

Liu et al., 2025, "ChunkKV: Semantic-Preserving KV Cache Compression for Efficient Long-Context LLM
Inference": score tokens (here SnapKV's pooled observation-window attention, summed over the layer's
heads), keep whole chunks of ``chunk`` tokens (:func:`tokensift.select.chunk_indices`), all heads the
same; adjacent layers select similar chunks, so each selection is reused for ``reuse`` layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from tokensift.kv.methods.snapkv import SnapKVPress
from tokensift.kv.press import LayerView, Press, Selection
from tokensift.select import chunk_indices


@dataclass
class ChunkKVPress(SnapKVPress):
    """SnapKV scores, chunks of ``chunk`` tokens (10 in the paper), index reuse over ``reuse`` layers."""

    chunk: int = 10
    reuse: int = 2
    scorer: str = "snapkv"
    """Token scores to rank chunks by: SnapKV's (the paper's choice) or any other registered KV method's."""
    _reused: dict[int, tuple[int, Tensor]] = field(default_factory=dict, init=False, repr=False)
    _inner: Press | None = field(default=None, init=False, repr=False)

    def score(self, view: LayerView) -> Tensor:
        if self.scorer == "snapkv":
            return super().score(view)
        if self._inner is None:
            from tokensift.kv.attach import build_press

            self._inner = build_press(self.scorer)
        return self._inner.score(view)

    def select(self, view: LayerView, scores: Tensor) -> Selection:
        k = self.budget(view)
        previous = self._reused.get(view.row)
        if previous is not None and view.layer % self.reuse and previous[0] == view.layer - 1:
            indices = previous[1]
        else:
            first, last = self.protection(k, view.n)
            indices = chunk_indices(scores.sum(0), k, self.chunk, protect_first=first, protect_last=last)
        self._reused[view.row] = (view.layer, indices)
        return [indices] * view.kv_heads
