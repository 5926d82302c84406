"""A KV-cache layer that keeps the selected tokens at full precision and packs the rest into a few bits.

Instead of evicting what a scorer did not select (MiKV's "no token left behind", ZipCache's salient tokens),
:class:`QuantizedLayer` stores those tokens in KIVI's layout (:mod:`tokensift.reduce.quantize`: keys per
channel, values per token, float16 scales and zero points, codes packed into bytes) and dequantizes them
when it attends. The kept tokens live in the :class:`~tokensift.kv.cache.RaggedLayer` it extends (so each
(row, KV head) may keep its own number of them), and so do the tokens decoded later, at full precision.
Attention order does not matter (the keys already carry their rotary positions): the low-precision tokens
come first, then the full-precision ones, then the new tokens, which are causal among themselves.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from tokensift.errors import MethodUnsupportedError
from tokensift.kv.cache import RaggedLayer, Segments, _future_mask, gather_segments
from tokensift.reduce import gather_tokens
from tokensift.reduce.quantize import Packed, dequantize, quantize, unpack_codes

LowPart = tuple[Packed, Packed]
"""Packed keys and values of the low-precision tokens."""


def _rows(packed: Packed, indices: Tensor) -> Packed:
    """The batch rows ``indices`` of a packed tensor with a leading batch dimension."""
    return dataclasses.replace(
        packed, codes=packed.codes[indices], scale=packed.scale[indices], zero=packed.zero[indices]
    )


def complement(kept: Tensor, start: int, end: int) -> Tensor:
    """Positions in ``[start, end)`` not in ``kept`` (ascending)."""
    mask = torch.ones(end, dtype=torch.bool, device=kept.device)
    mask[:start] = False
    mask[kept] = False
    return mask.nonzero().squeeze(-1)


class QuantizedLayer(RaggedLayer):
    """Kept tokens at full precision (ragged per head), every other token of the context at ``bits`` bits."""

    def __init__(self, keys: Segments, values: Segments, low: LowPart | list[list[LowPart]]) -> None:
        super().__init__(keys, values)
        self.low = low
        """One :data:`LowPart` with ``[B, Hkv]`` leading dimensions when every (row, head) packed as many tokens,
        else one per row and head."""

    @classmethod
    def quantized(
        cls,
        keys: Tensor,
        values: Tensor,
        selection: list[list[Tensor]],
        starts: list[int],
        *,
        bits: int,
        group: int,
    ) -> QuantizedLayer:
        """``selection[row][head]`` of ``keys, values [B, Hkv, T, D]`` at full precision; the rest of each row
        (from ``starts[row]``, left padding excluded) packed at ``bits`` bits in groups of ``group``."""
        n = keys.shape[2]
        rest = [[complement(kept, starts[b], n) for kept in row] for b, row in enumerate(selection)]
        seg_k, seg_v = gather_segments(keys, values, selection)
        if len({idx.numel() for row in rest for idx in row}) == 1:
            index = torch.stack([torch.stack(row) for row in rest])
            low_k = gather_tokens(keys, index)
            low_v = gather_tokens(values, index)
            low: LowPart | list[list[LowPart]] = (
                quantize(low_k, bits, group, per_channel=True),
                quantize(low_v, bits, group, per_channel=False),
            )
        else:
            low = [
                [
                    (
                        quantize(gather_tokens(keys[b, h], idx), bits, group, per_channel=True),
                        quantize(gather_tokens(values[b, h], idx), bits, group, per_channel=False),
                    )
                    for h, idx in enumerate(row)
                ]
                for b, row in enumerate(rest)
            ]
        return cls(seg_k, seg_v, low)

    def low_lengths(self) -> Tensor:
        """``[B, Hkv]`` tokens stored at low precision."""
        if isinstance(self.low, tuple):
            return torch.full(self.low[0].codes.shape[:2], self.low[0].length)
        return torch.tensor([[k.length for k, _ in row] for row in self.low])

    # --- RaggedLayer, with the low-precision tokens in front --------------------------------------------------
    @property
    def dense(self) -> bool:
        return self.segments_k is None and isinstance(self.low, tuple)

    def segment(self, row: int, head: int) -> tuple[Tensor, Tensor]:
        keys, values = super().segment(row, head)
        if isinstance(self.low, tuple):
            low_k, low_v = dequantize(self.low[0])[row, head], dequantize(self.low[1])[row, head]
        else:
            low_k, low_v = (dequantize(p) for p in self.low[row][head])
        return torch.cat([low_k, keys]), torch.cat([low_v, values])

    def attend(self, query: Tensor, scaling: float, *, need_weights: bool = False) -> tuple[Tensor, Segments | None]:
        if self.segments_k is None and not need_weights:
            if isinstance(self.low, tuple):
                return attend_packed(query, scaling, self.low, self.keys, self.values), None
            self._split_dense()
        return super().attend(query, scaling, need_weights=need_weights)

    def _split_dense(self) -> None:
        """Full-precision part dense but low part ragged: hand the full part over as segments (ragged attend)."""
        rows, heads = self.keys.shape[:2]
        keys = [[self.keys[b, h] for h in range(heads)] for b in range(rows)]
        values = [[self.values[b, h] for h in range(heads)] for b in range(rows)]
        self.segments_k, self.segments_v = keys, values
        self.keys = self.keys[:, :, :0]
        self.values = self.values[:, :, :0]

    def lengths(self) -> Tensor:
        return super().lengths() + self.low_lengths()

    def nbytes(self) -> int:
        """Bytes really stored: full-precision tensors plus packed codes, scales and zero points."""
        parts = [self.low] if isinstance(self.low, tuple) else [p for row in self.low for p in row]
        return super().nbytes() + sum(k.nbytes() + v.nbytes() for k, v in parts)

    def full_lengths(self) -> Tensor:
        """``[B, Hkv]`` tokens stored at full precision (kept ones and the ones decoded since)."""
        return super().lengths()

    def keep(self, selection: list[list[Tensor]]) -> None:
        raise MethodUnsupportedError("a low-precision KV cache cannot evict while decoding (use an eviction press)")

    def batch_select_indices(self, indices: Tensor) -> None:
        super().batch_select_indices(indices)
        if isinstance(self.low, tuple):
            self.low = (_rows(self.low[0], indices), _rows(self.low[1], indices))
        else:
            self.low = [list(self.low[int(i)]) for i in indices.tolist()]

    def copy(self) -> QuantizedLayer:
        clone = super().copy()
        assert isinstance(clone, QuantizedLayer)
        if not isinstance(self.low, tuple):
            clone.low = [list(r) for r in self.low]
        return clone


def attend_packed(query: Tensor, scaling: float, low: LowPart, keys: Tensor, values: Tensor) -> Tensor:
    """Attention of ``query [B, H, q, D]`` over packed tokens ``low`` and full-precision ``keys, values [B, Hkv,
    L, D]`` (the last ``q`` of them the queries' own, causal), without materialising the dequantized tensors.

    The scales and zero points are folded into the products instead: a key group's logits are ``(q * scale)
    . codes + q . zero`` and a value group's output ``(p * scale) @ codes + p . zero``, so only the integer
    codes are widened (to the query's dtype), and nothing of the cache's size is written but them. Returns
    ``[B, q, H, D]`` (transformers' layout), equal to attention over the dequantized cache.
    """
    low_k, low_v = low
    batch, heads, n_queries, dim = query.shape
    kv_heads = keys.shape[1]
    rows = heads // kv_heads * n_queries
    q = (query * scaling).reshape(batch, kv_heads, rows, dim)  # the (group head, query) rows of each KV head
    codes = unpack_codes(low_k).view(batch, kv_heads, -1, low_k.group, dim)  # [B, Hkv, groups, g, D]
    scale, zero = low_k.scale.to(q.dtype), low_k.zero.to(q.dtype)  # [B, Hkv, groups, 1, D]
    low_logits = (q[:, :, None] * scale) @ codes.transpose(-1, -2) + (q[:, :, None] * zero).sum(-1, keepdim=True)
    low_logits = low_logits.permute(0, 1, 3, 2, 4).reshape(batch, kv_heads, rows, -1)[..., : low_k.length]
    full_logits = q @ keys.transpose(-1, -2)
    if n_queries > 1:
        future = _future_mask(n_queries, keys.shape[2], query.device).repeat(rows // n_queries, 1)
        full_logits = full_logits.masked_fill(future, float("-inf"))
    probs = torch.softmax(torch.cat([low_logits, full_logits], dim=-1), dim=-1)
    p_low, p_full = probs[..., : low_k.length], probs[..., low_k.length :]
    out = p_full @ values
    groups = dim // low_v.group
    v_codes = unpack_codes(low_v).view(batch, kv_heads, -1, groups, low_v.group).transpose(2, 3)  # [B,Hkv,J,N,g]
    v_scale = low_v.scale.to(q.dtype).squeeze(-1).permute(0, 1, 3, 2)  # [B, Hkv, J, N]
    v_zero = low_v.zero.to(q.dtype).squeeze(-1).permute(0, 1, 3, 2)
    weighted = p_low[:, :, None] * v_scale[:, :, :, None]  # [B, Hkv, J, rows, N]
    low_out = weighted @ v_codes + (p_low[:, :, None] @ v_zero[..., None])  # [B, Hkv, J, rows, g]
    out = out + low_out.permute(0, 1, 3, 2, 4).reshape(batch, kv_heads, rows, dim)
    return out.view(batch, heads, n_queries, dim).transpose(1, 2).contiguous()
