"""A KV-cache layer that keeps the selected tokens at full precision and packs the rest into a few bits.

Instead of evicting what a scorer did not select (MiKV's "no token left behind", ZipCache's salient tokens),
:class:`QuantizedLayer` stores those tokens in KIVI's layout (:mod:`tokensift.reduce.quantize`: keys per
channel, values per token, float16 scales and zero points, codes packed into bytes) and dequantizes them
when it attends. The kept tokens live in the :class:`~tokensift.kv.cache.RaggedLayer` it extends (so each
(row, KV head) may keep its own number of them), and so do the tokens decoded later, at full precision.
Attention order does not matter (the keys already carry their rotary positions): the low-precision tokens
come first, then the full-precision ones, then the new tokens, which are causal among themselves.

When the heads pack different numbers of tokens (a head-wise scorer), a row's packed heads are stored one after
another in a single allocation (:class:`FlatLow`). Quantized pruning (``qprune``) uses the same layer the other way
round: what it packs is the press's selection, and the rest of the context is not stored at all.

Several queries at once (a prompt read after compression) attend with the scales folded into the products
(:func:`attend_packed`, :func:`attend_flat`). A decoding step (one query per row) instead dequantizes the layer's
packed tokens into a buffer reused by every layer and step (transient working memory the size of one layer's
packed part, not the cache's storage) and calls torch's fused attention kernel on it (:func:`attend_parts`,
:func:`attend_flat_step`): fewer, larger operations than the products, though on the CPU still slower than
attending a full float32 cache (widening the codes costs more than reading four times the bytes).
"""

from __future__ import annotations

import dataclasses
import itertools
import threading

import torch
from torch import Tensor

from tokensift.errors import MethodUnsupportedError
from tokensift.kv.cache import RaggedLayer, Segments, _future_mask, gather_segments
from tokensift.reduce import gather_tokens
from tokensift.reduce.quantize import Packed, _table, dequantize, quantize, unpack_codes
from tokensift.scores.attention import cpu_flash_kernel, merge_by_lse

LowPart = tuple[Packed, Packed]
"""Packed keys and values of the low-precision tokens."""


@dataclasses.dataclass(frozen=True)
class FlatLow:
    """One row's packed tokens of every KV head, head after head: keys ``[sum N'_h, D * bits / 8]`` (each head
    padded to whole token groups, as :func:`quantize` pads), values ``[sum N_h, ...]``; ``counts[h] = N_h``."""

    keys: Packed
    values: Packed
    counts: tuple[int, ...]

    @classmethod
    def join(cls, parts: list[LowPart]) -> FlatLow:
        """The heads' packed parts (each quantized on its own) copied into one allocation per tensor."""
        keys = [k for k, _ in parts]
        values = [v for _, v in parts]

        def cat(packs: list[Packed]) -> Packed:
            codes = torch.cat([p.codes for p in packs])
            return dataclasses.replace(
                packs[0],
                codes=codes,
                scale=torch.cat([p.scale for p in packs]),
                zero=torch.cat([p.zero for p in packs]),
                length=int(codes.shape[0]),
            )

        return cls(cat(keys), cat(values), tuple(k.length for k in keys))

    def key_rows(self) -> list[int]:
        """Per head, the rows its keys take: its tokens padded to whole token groups."""
        group = self.keys.group
        return [-(-n // group) * group for n in self.counts]

    def heads(self) -> list[LowPart]:
        """Per head, views of this row's storage (they partition it: their bytes add up to its bytes)."""
        group = self.keys.group
        out: list[LowPart] = []
        token = padded = 0
        for n, rows in zip(self.counts, self.key_rows(), strict=True):
            k = dataclasses.replace(
                self.keys,
                codes=self.keys.codes[padded : padded + rows],
                scale=self.keys.scale[padded // group : (padded + rows) // group],
                zero=self.keys.zero[padded // group : (padded + rows) // group],
                length=n,
            )
            v = dataclasses.replace(
                self.values,
                codes=self.values.codes[token : token + n],
                scale=self.values.scale[token : token + n],
                zero=self.values.zero[token : token + n],
                length=n,
            )
            out.append((k, v))
            token, padded = token + n, padded + rows
        return out


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
    """Kept tokens at full precision (ragged per head), every other token of the context at ``bits`` bits; or,
    after quantized pruning (:attr:`pruned`), the press's kept tokens packed and the rest evicted."""

    def __init__(self, keys: Segments, values: Segments, low: LowPart | list[FlatLow], *, pruned: bool = False) -> None:
        super().__init__(keys, values)
        self.pruned = pruned
        """Whether the packed tokens are the press's selection and the rest was evicted (quantized pruning)."""
        self.low: LowPart | list[list[LowPart]]
        """One :data:`LowPart` with ``[B, Hkv]`` leading dimensions when every (row, head) packed as many tokens,
        else one per row and head (views of :attr:`flat`)."""
        self.flat: list[FlatLow] | None = None
        """Per row, the storage of :attr:`low`'s heads when they pack different numbers of tokens."""
        if isinstance(low, tuple):
            self.low = low
        else:
            self.flat = low
            self.low = [row.heads() for row in low]

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
        packed: list[list[Tensor]] | None = None,
    ) -> QuantizedLayer:
        """``selection[row][head]`` of ``keys, values [B, Hkv, T, D]`` at full precision; the rest of each row
        (from ``starts[row]``, left padding excluded) packed at ``bits`` bits in groups of ``group``. With
        ``packed`` (positions per row and head, disjoint from ``selection``) only those are packed and every
        other position is dropped (quantized pruning)."""
        n = keys.shape[2]
        rest = packed
        if rest is None:
            rest = [[complement(kept, starts[b], n) for kept in row] for b, row in enumerate(selection)]
        seg_k, seg_v = gather_segments(keys, values, selection)
        if len({idx.numel() for row in rest for idx in row}) == 1:
            index = torch.stack([torch.stack(row) for row in rest])
            low_k = gather_tokens(keys, index)
            low_v = gather_tokens(values, index)
            low = (quantize(low_k, bits, group, per_channel=True), quantize(low_v, bits, group, per_channel=False))
            return cls(seg_k, seg_v, low, pruned=packed is not None)
        flat = [
            FlatLow.join(
                [
                    (
                        quantize(gather_tokens(keys[b, h], idx), bits, group, per_channel=True),
                        quantize(gather_tokens(values[b, h], idx), bits, group, per_channel=False),
                    )
                    for h, idx in enumerate(row)
                ]
            )
            for b, row in enumerate(rest)
        ]
        return cls(seg_k, seg_v, flat, pruned=packed is not None)

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
        if need_weights:
            return super().attend(query, scaling, need_weights=True)
        if query.shape[2] == 1 and (self.flat is not None or self.segments_k is None):
            return self._attend_step(query, scaling), None
        if self.segments_k is None and isinstance(self.low, tuple):
            return attend_packed(query, scaling, self.low, self.keys, self.values), None
        if self.flat is None:
            return super().attend(query, scaling)
        if self.segments_k is None:
            self._split_dense()
        assert self.segments_k is not None and self.segments_v is not None
        rows = [
            attend_flat(query[b], scaling, flat, keys, values)
            for b, (flat, keys, values) in enumerate(zip(self.flat, self.segments_k, self.segments_v, strict=True))
        ]
        return torch.stack(rows).transpose(1, 2).contiguous(), None

    def _attend_step(self, query: Tensor, scaling: float) -> Tensor:
        """One decoding step (one query per row): each packed part dequantized into a reused buffer and attended
        with the fused kernel, beside the full-precision part (:func:`attend_parts`)."""
        if isinstance(self.low, tuple):
            low_k, low_v = self.low
            keys = dequantize(low_k, _scratch(low_k.numel(), query.dtype, query.device, 0))
            values = dequantize(low_v, _scratch(low_v.numel(), query.dtype, query.device, 1))
            return attend_parts(query, scaling, [(keys, values), (self.keys, self.values)]).transpose(1, 2)
        if self.segments_k is None:
            self._split_dense()
        assert self.flat is not None and self.segments_k is not None and self.segments_v is not None
        rows = [
            attend_flat_step(query[b], scaling, flat, keys, values)
            for b, (flat, keys, values) in enumerate(zip(self.flat, self.segments_k, self.segments_v, strict=True))
        ]
        return torch.stack(rows).transpose(1, 2)

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
        if self.flat is not None:
            parts = [(row.keys, row.values) for row in self.flat]
        else:
            parts = [self.low] if isinstance(self.low, tuple) else [p for row in self.low for p in row]
        return super().nbytes() + sum(k.nbytes() + v.nbytes() for k, v in parts)

    def full_lengths(self) -> Tensor:
        """``[B, Hkv]`` tokens stored at full precision (kept ones and the ones decoded since)."""
        return super().lengths()

    def kept_lengths(self) -> Tensor:
        """The selected tokens: those at full precision, or every stored one after quantized pruning."""
        return self.lengths() if self.pruned else self.full_lengths()

    def keep(self, selection: list[list[Tensor]]) -> None:
        raise MethodUnsupportedError("a low-precision KV cache cannot evict while decoding (use an eviction press)")

    def batch_select_indices(self, indices: Tensor) -> None:
        super().batch_select_indices(indices)
        if isinstance(self.low, tuple):
            self.low = (_rows(self.low[0], indices), _rows(self.low[1], indices))
        else:
            self.low = [list(self.low[int(i)]) for i in indices.tolist()]
            if self.flat is not None:
                self.flat = [self.flat[int(i)] for i in indices.tolist()]

    def copy(self) -> QuantizedLayer:
        clone = super().copy()
        assert isinstance(clone, QuantizedLayer)
        if not isinstance(self.low, tuple):
            clone.low = [list(r) for r in self.low]
        if self.flat is not None:
            clone.flat = list(self.flat)
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


def attend_flat(query: Tensor, scaling: float, low: FlatLow, keys: list[Tensor], values: list[Tensor]) -> Tensor:
    """One row's attention, ``query [H, q, D]`` over every KV head's packed tokens ``low`` and full-precision
    ``keys[h], values[h] [F_h, D]`` (their last ``q`` the queries' own, causal); returns ``[H, q, D]``.

    The heads hold different numbers of packed and of full-precision tokens (the same total), so instead of a
    loop over heads every query row is multiplied with the whole row's keys at once and a mask keeps each row
    to its own head's tokens: the products are a few times larger than needed (they are tiny next to the model's
    weights), but a decoding step costs a handful of operations per layer instead of a dozen per head.
    """
    heads, n_queries, dim = query.shape
    kv_heads = len(low.counts)
    rows = heads // kv_heads * n_queries  # query rows per KV head
    q = (query * scaling).reshape(heads * n_queries, dim)
    low_k = dequantize(low.keys)
    full_k, full_v = torch.cat(keys), torch.cat(values)
    packed_logits = q @ low_k.T  # [R, sum N'_h]: crop each head's group padding
    starts = [0, *itertools.accumulate(low.key_rows())]
    low_logits = torch.cat([packed_logits[:, a : a + n] for a, n in zip(starts, low.counts, strict=False)], dim=1)
    logits = torch.cat([low_logits, q @ full_k.T], dim=1)
    mask = torch.full_like(logits, float("-inf"))
    own = torch.zeros(rows, n_queries, dtype=logits.dtype, device=logits.device)
    own = own.masked_fill(_future_mask(n_queries, n_queries, query.device).repeat(rows // n_queries, 1), float("-inf"))
    split = sum(low.counts)  # the packed tokens come first, then the full-precision ones
    low_at, full_at = 0, split
    for h, (n, k) in enumerate(zip(low.counts, keys, strict=True)):
        block = mask[h * rows : (h + 1) * rows]
        block[:, low_at : low_at + n] = 0
        past = k.shape[0] - n_queries
        block[:, full_at : full_at + past] = 0
        block[:, full_at + past : full_at + k.shape[0]] = own
        low_at, full_at = low_at + n, full_at + k.shape[0]
    probs = torch.softmax(logits + mask, dim=-1)
    out = _packed_values(probs[:, :split], low.values) + probs[:, split:] @ full_v
    return out.view(heads, n_queries, -1)


def _packed_values(probs: Tensor, values: Packed) -> Tensor:
    """``probs [R, N] @`` the values ``packed`` per token stands for, its scales folded into the probabilities:
    for each channel group ``(p * scale) @ codes + p @ zero`` (a third less time than dequantizing first)."""
    codes = unpack_codes(values, probs.dtype)  # [N, D]
    scale, zero = values.scale.to(probs.dtype)[..., 0], values.zero.to(probs.dtype)[..., 0]  # [N, D / g]
    offsets = probs @ zero  # [R, D / g]
    width = values.group
    parts = [
        (probs * scale[:, j]) @ codes[:, j * width : (j + 1) * width] + offsets[:, j : j + 1]
        for j in range(scale.shape[1])
    ]
    return torch.cat(parts, dim=1)


_BUFFERS = threading.local()


def _scratch(numel: int, dtype: torch.dtype, device: torch.device, slot: int) -> Tensor:
    """A reused buffer of ``numel`` elements (one per slot, dtype and device, per thread).

    A decoding step dequantizes one layer's packed tokens at a time into it: a transient working buffer the size
    of one layer's low-precision part, never part of the cache (its bytes are not the cache's). Reusing it spares
    every layer and step a fresh allocation of that size, which costs page faults each time on the CPU."""
    key = (slot, dtype, device)
    found: dict[tuple[int, torch.dtype, torch.device], Tensor] = _BUFFERS.__dict__.setdefault("buffers", {})
    buffer = found.get(key)
    if buffer is None or buffer.numel() < numel:
        buffer = torch.empty(numel + numel // 4, dtype=dtype, device=device)  # room to grow a little
        found[key] = buffer
    return buffer[:numel]


def attend_parts(query: Tensor, scaling: float, parts: list[tuple[Tensor, Tensor]]) -> Tensor:
    """Attention of one query per row, ``query [B, H, 1, D]``, over the keys and values of every part
    (``[B, Hkv, n_i, D]``; GQA), as if they were one sequence: on the CPU each part goes through torch's fused
    flash kernel, which also returns the log-sum-exp, and the parts are merged by it (no concatenation of the
    parts, no mask); elsewhere SDPA over the concatenated parts. Returns ``[B, H, 1, D]``."""
    parts = [(k, v) for k, v in parts if k.shape[2] > 0]
    kernel = cpu_flash_kernel(query)
    if kernel is None:
        keys, values = torch.cat([k for k, _ in parts], 2), torch.cat([v for _, v in parts], 2)
        return torch.nn.functional.scaled_dot_product_attention(query, keys, values, scale=scaling, enable_gqa=True)
    out, lse = kernel(query, parts[0][0], parts[0][1], 0.0, False, scale=scaling)
    for keys, values in parts[1:]:
        out, lse = merge_by_lse(out, lse, *kernel(query, keys, values, 0.0, False, scale=scaling))
    return out


def attend_flat_step(query: Tensor, scaling: float, low: FlatLow, keys: list[Tensor], values: list[Tensor]) -> Tensor:
    """One row's decoding step, ``query [H, 1, D]`` over every KV head's packed tokens ``low`` and full-precision
    ``keys[h], values[h] [F_h, D]``. Returns ``[H, 1, D]``.

    When every head holds as many tokens in all (packed ones plus full-precision ones: a packing reducer that keeps
    every token), a buffer ``[Hkv, L, D]`` takes each head's packed tokens dequantized, then its full-precision
    ones, and one call of the fused kernel attends over all heads at once (no mask, no loop of attention calls). A
    row whose heads hold different totals (quantized pruning with a head-wise scorer) takes
    :func:`attend_heads_step`."""
    dim = query.shape[-1]
    kv_heads = len(low.counts)
    totals = {n + k.shape[0] for n, k in zip(low.counts, keys, strict=True)}
    if len(totals) != 1:
        return attend_heads_step(query, scaling, low, keys, values)
    (total,) = totals
    slack = low.keys.group  # a head's key rows run past its packed tokens by its group padding
    size = (kv_heads * total + slack) * dim
    key_buffer = _scratch(size, query.dtype, query.device, 0)
    value_buffer = _scratch(size, query.dtype, query.device, 1)
    # dequantize's gather and scaling, written out so that the row's codes are widened to indices and its
    # scales converted once for all heads (through dequantize per head view: 13 % slower per step, 160 us a layer)
    parts = [(low.keys, key_buffer, low.key_rows()), (low.values, value_buffer, list(low.counts))]
    for packed, buffer, rows in parts:
        index = packed.codes.reshape(-1).to(torch.int32)
        scale, zero = packed.scale.to(query.dtype), packed.zero.to(query.dtype)
        table = _table(packed.bits, query.device, query.dtype)
        per_byte = table.shape[1]
        row = 0
        for h, n in enumerate(rows):  # head h's dequantized tokens start at row h * total of the buffer
            out = buffer[h * total * dim : (h * total + n) * dim]
            torch.index_select(
                table, 0, index[row * dim // per_byte : (row + n) * dim // per_byte], out=out.view(-1, per_byte)
            )
            if packed.per_channel:
                grouped = out.view(n // packed.group, packed.group, dim)
                stats = slice(row // packed.group, (row + n) // packed.group)
            else:
                grouped = out.view(n, dim // packed.group, packed.group)
                stats = slice(row, row + n)
            torch.addcmul(zero[stats], grouped, scale[stats], out=grouped)
            row += n
    key_view = key_buffer[: kv_heads * total * dim].view(kv_heads, total, dim)
    value_view = value_buffer[: kv_heads * total * dim].view(kv_heads, total, dim)
    for h, n in enumerate(low.counts):  # after the packed tokens (over the keys' group padding)
        key_view[h, n:] = keys[h]
        value_view[h, n:] = values[h]
    return attend_parts(query[None], scaling, [(key_view[None], value_view[None])])[0]


def attend_heads_step(query: Tensor, scaling: float, low: FlatLow, keys: list[Tensor], values: list[Tensor]) -> Tensor:
    """:func:`attend_flat_step` for a row whose heads hold different totals: the row's packed keys and values are
    dequantized at once into the reused buffers (two operations each, all heads); each head's slice and its
    full-precision tokens go through the fused kernel as two parts, merged by their log-sum-exps for every head at
    once (:func:`attend_parts` per head off the CPU or when a head packed nothing). Returns ``[H, 1, D]``."""
    group = query.shape[0] // len(low.counts)
    low_k = dequantize(low.keys, _scratch(low.keys.numel(), query.dtype, query.device, 0))  # [sum N'_h, D]
    low_v = dequantize(low.values, _scratch(low.values.numel(), query.dtype, query.device, 1))  # [sum N_h, D]
    key_at = [0, *itertools.accumulate(low.key_rows())]
    value_at = [0, *itertools.accumulate(low.counts)]
    packed = [
        (low_k[key_at[h] : key_at[h] + n][None, None], low_v[value_at[h] : value_at[h] + n][None, None])
        for h, n in enumerate(low.counts)
    ]
    full = [(k[None, None], v[None, None]) for k, v in zip(keys, values, strict=True)]
    queries = [query[None, h * group : (h + 1) * group] for h in range(len(low.counts))]
    kernel = cpu_flash_kernel(query)
    if kernel is None or 0 in low.counts:
        outs = [attend_parts(q, scaling, [p, f])[0] for q, p, f in zip(queries, packed, full, strict=True)]
        return torch.cat(outs)
    # each head's two parts through the kernel, then one log-sum-exp merge for every head at once
    low_parts = [kernel(q, k, v, 0.0, False, scale=scaling) for q, (k, v) in zip(queries, packed, strict=True)]
    full_parts = [kernel(q, k, v, 0.0, False, scale=scaling) for q, (k, v) in zip(queries, full, strict=True)]
    out_a, lse_a = torch.cat([o for o, _ in low_parts], 1), torch.cat([s for _, s in low_parts], 1)  # [1, H, 1, (D)]
    out_b, lse_b = torch.cat([o for o, _ in full_parts], 1), torch.cat([s for _, s in full_parts], 1)
    return merge_by_lse(out_a, lse_a, out_b, lse_b)[0][0]
