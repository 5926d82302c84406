"""Merging reducers' shared step: each row and KV head's unselected tokens folded into its kept ones.

The weights are the attention each token received from the last :data:`WINDOW` query rows (the
observation window: the prompt's end, which generation continues), and the result is a
:class:`~tokensift.kv.cache.RaggedLayer` holding exactly the kept tokens, with their merged values and,
for mass-preserving merges, their log mass (:func:`tokensift.reduce.kvmerge.fold_into_kept`).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from tokensift.kv.cache import RaggedLayer
from tokensift.kv.view import LayerView, Selection, last_queries
from tokensift.scores import attention_received

WINDOW = 32
"""Query rows whose attention weighs the merge."""

RowMerge = Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor | None]]
"""``(keys [T, D], values [T, D], kept [k], weights [T]) -> (keys [k, D], values [k, D], log mass [k] or None)``."""


def window_weights(view: LayerView) -> Tensor:
    """``[Hkv, T]`` attention each token received from the view's last :data:`WINDOW` query rows."""
    rows = last_queries(view, WINDOW)
    return attention_received(rows, view.keys, scaling=view.scaling)[0]


def merged_layer(
    keys: Tensor, values: Tensor, selection: list[Selection], views: list[LayerView], starts: list[int], merge: RowMerge
) -> RaggedLayer:
    """Apply ``merge`` to every (row, head) of ``keys, values [B, Hkv, T, D]`` (``selection``: kept positions in
    the batch, ``starts``: where each row's real tokens begin)."""
    seg_k, seg_v, seg_b = [], [], []
    for view, start, row in zip(views, starts, selection, strict=True):
        weights = window_weights(view)
        out_k, out_v, out_b = [], [], []
        for h, kept in enumerate(row):
            k, v, b = merge(view.keys[0, h], view.values[0, h], kept - start, weights[h])
            out_k.append(k)
            out_v.append(v)
            out_b.append(b if b is not None else k.new_zeros(k.shape[0]))
        seg_k.append(out_k)
        seg_v.append(out_v)
        seg_b.append(out_b)
    has_bias = any(bool(b.any()) for row in seg_b for b in row)
    return RaggedLayer(seg_k, seg_v, [[b.to(keys.dtype) for b in row] for row in seg_b] if has_bias else None)


def merged_bytes_fraction(head_dim: int) -> float:
    """A kept token's bytes with its log mass (one value in the cache's dtype) over its bytes without."""
    return 1 + 1 / (2 * head_dim)
