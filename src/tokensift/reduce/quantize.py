"""Low-precision storage of KV tensors: KIVI's layout, really packed into bytes.

Liu et al., 2024, "KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache" (arXiv:2402.02750):
keys have outlier *channels*, so they are quantized per channel over groups of ``group`` tokens; values
have no such structure and are quantized per token over groups of ``group`` channels. Each group gets an
asymmetric min/max scale and zero point (stored in float16); the integer codes are packed ``8 // bits``
to a byte, so the storage is what :meth:`Packed.nbytes` counts. Key groups run along the tokens, so a
last partial group is padded by repeating the last token (its codes are stored; the padding is cropped
on :func:`dequantize`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from tokensift.errors import ParameterError

BITS = (2, 4, 8)


@dataclass(frozen=True)
class Packed:
    """A ``[..., N, D]`` tensor in ``bits``-bit codes: ``codes`` uint8 ``[..., N', D * bits / 8]`` (``N'``: ``N``
    padded to whole token groups for keys), ``scale``/``zero`` float16 per group."""

    codes: Tensor
    scale: Tensor
    zero: Tensor
    bits: int
    group: int
    per_channel: bool
    length: int
    dtype: torch.dtype

    def nbytes(self) -> int:
        """Bytes of the packed codes, scales and zero points (a view counts its own elements: the views of one
        layer's packed heads partition a single allocation, see :class:`tokensift.kv.lowbits.FlatLow`)."""
        return sum(t.numel() * t.element_size() for t in (self.codes, self.scale, self.zero))

    def numel(self) -> int:
        """Values the codes stand for once unpacked (keys: their group padding included)."""
        return self.codes.numel() * 8 // self.bits

    @property
    def width(self) -> int:
        return int(self.codes.shape[-1]) * 8 // self.bits


def check_bits(bits: int) -> int:
    if bits not in BITS:
        raise ParameterError(f"bits must be one of {', '.join(map(str, BITS))}, got {bits}", option="bits")
    return bits


def _affine(x: Tensor, dim: int, bits: int) -> tuple[Tensor, Tensor, Tensor]:
    """Codes of ``x`` with a min/max scale along ``dim``, and that scale and zero (float16)."""
    low, high = x.amin(dim, keepdim=True), x.amax(dim, keepdim=True)
    scale = ((high - low) / (2**bits - 1)).to(torch.float16).clamp_min(1e-6)
    zero = low.to(torch.float16)
    codes = ((x - zero.to(x.dtype)) / scale.to(x.dtype)).round_().clamp_(0, 2**bits - 1).to(torch.uint8)
    return codes, scale, zero


def _pack(codes: Tensor, bits: int) -> Tensor:
    per_byte = 8 // bits
    parts = codes.reshape(*codes.shape[:-1], codes.shape[-1] // per_byte, per_byte)
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8, device=codes.device)
    return (parts << shifts).sum(-1, dtype=torch.uint8)


@functools.cache
def _table(bits: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``[256, 8 // bits]``: the codes each byte value holds, lowest bits first, as ``dtype``."""
    shifts = torch.arange(0, 8, bits, device=device)
    return ((torch.arange(256, device=device)[:, None] >> shifts) & (2**bits - 1)).to(dtype)


def _unpack(codes: Tensor, bits: int, dtype: torch.dtype, out: Tensor | None = None) -> Tensor:
    """Codes ``[..., D]`` as ``dtype`` from bytes ``[..., D * bits / 8]``: one row of a 256-entry table per byte
    (a single gather; shifting and masking the bytes, then widening, takes three passes and twice the time).
    ``out``: a contiguous buffer of exactly that many elements to write them into (no allocation)."""
    table = _table(bits, codes.device, dtype)
    index = codes.reshape(-1).to(torch.int32)
    if out is None:
        flat = table.index_select(0, index)
    else:
        flat = torch.index_select(table, 0, index, out=out.view(-1, table.shape[1]))
    return flat.view(*codes.shape[:-1], codes.shape[-1] * table.shape[1])


def unpack_codes(packed: Packed, dtype: torch.dtype | None = None) -> Tensor:
    """The integer codes of ``packed`` as ``[..., N', D]`` floats (keys: ``N'`` padded to whole groups)."""
    return _unpack(packed.codes, packed.bits, dtype or packed.dtype)


def quantize(x: Tensor, bits: int, group: int, *, per_channel: bool) -> Packed:
    """Pack ``x [..., N, D]``: keys with ``per_channel`` (groups of ``group`` tokens per channel), values
    without (groups of ``group`` channels per token; ``D`` must divide by ``group`` or the whole row is one)."""
    check_bits(bits)
    n, d = x.shape[-2], x.shape[-1]
    if d % (8 // bits):
        raise ParameterError(f"head dim {d} does not pack into whole bytes at {bits} bits", option="bits")
    if n == 0:  # nothing to pack (a row that keeps every token at full precision)
        empty = x.new_empty(*x.shape[:-2], 0, d)
        if not per_channel:
            group = group if d % group == 0 else d
        groups = (1, d) if per_channel else (d // group, 1)  # the stats' shape per row, as when rows are packed
        stats = torch.zeros(*x.shape[:-2], 0, *groups, dtype=torch.float16, device=x.device)
        return Packed(_pack(empty.to(torch.uint8), bits), stats, stats.clone(), bits, group, per_channel, 0, x.dtype)
    if per_channel:
        padded = math.ceil(n / group) * group
        if padded > n:
            x = torch.cat([x, x[..., -1:, :].expand(*x.shape[:-2], padded - n, d)], dim=-2)
        grouped = x.reshape(*x.shape[:-2], padded // group, group, d)
        codes, scale, zero = _affine(grouped, -2, bits)
        codes = codes.reshape(*x.shape[:-2], padded, d)
    else:
        width = group if d % group == 0 else d
        grouped = x.reshape(*x.shape[:-1], d // width, width)
        codes, scale, zero = _affine(grouped, -1, bits)
        codes = codes.reshape(*x.shape)
        group = width
    return Packed(_pack(codes, bits), scale, zero, bits, group, per_channel, n, x.dtype)


def dequantize(packed: Packed, out: Tensor | None = None) -> Tensor:
    """The ``[..., N, D]`` tensor ``packed`` stands for, in its original dtype; ``out``: a contiguous buffer of
    :meth:`Packed.numel` elements of that dtype to build it in (the result is a view of it)."""
    codes = _unpack(packed.codes, packed.bits, packed.dtype, out)
    d = codes.shape[-1]
    scale, zero = packed.scale.to(packed.dtype), packed.zero.to(packed.dtype)
    if packed.per_channel:
        grouped = codes.view(*codes.shape[:-2], codes.shape[-2] // packed.group, packed.group, d)
        torch.addcmul(zero, grouped, scale, out=grouped)  # in place: the codes are a fresh tensor (or ``out``)
        return codes[..., : packed.length, :]
    grouped = codes.view(*codes.shape[:-1], d // packed.group, packed.group)
    return torch.addcmul(zero, grouped, scale, out=grouped).view(codes.shape)


def packed_bytes_per_token(head_dim: int, bits: int, group: int) -> float:
    """Bytes one token's key plus value takes packed, scales and zero points included (KIVI layout)."""
    codes = 2 * head_dim * bits / 8
    key_stats = head_dim * 2 * 2 / group  # per channel, one fp16 scale and zero per group of tokens
    width = group if head_dim % group == 0 else head_dim
    value_stats = head_dim // width * 2 * 2
    return codes + key_stats + value_stats
