"""Quantized pruning: evict what the wrapped press does not select and pack what it keeps into a few bits.

Zhang et al., 2024, "More Tokens, Lower Precision: Towards the Optimal Token-Precision Trade-off in KV Cache
Compression" (arXiv:2412.12706). At a fixed memory budget, pruning alone keeps few tokens at full precision and
quantization alone keeps every token at a precision too low to read; spending the bytes on more tokens at 4 bits
(a quarter of the precision, about four times the tokens) beats both, most of all on retrieval. The wrapped press
ranks the tokens as it would for eviction (``qprune:kvzap``, ``qprune:snapkv``); its kept tokens are packed in
KIVI's layout (keys per channel, values per token, :mod:`tokensift.reduce.quantize`) and the rest are dropped.
``--ratio`` is the share of the context evicted, as for the press alone; :meth:`QuantizedPruning.keep_for_bytes`
turns a bytes budget into it. Tokens decoded later stay at full precision, like KIVI's residual window, and
``full`` keeps that share of each head's kept tokens (its most recent ones) at full precision too: a larger budget
is then spent on fewer, sharper tokens, and a decoding step widens fewer codes.
Differences from the paper: it compares several pruning methods, quantization schemes and bit widths; here the
layout is KIVI's (fp16 scales and zero points counted in the bytes), 4 bits by default, the share kept follows
the bytes budget, and the ``full`` tier is an addition of ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor

from tokensift.kv.lowbits import QuantizedLayer
from tokensift.kv.methods.quant import LowBits
from tokensift.kv.methods.snapkv import SnapKV
from tokensift.kv.press import Press, Wrapper
from tokensift.kv.view import LayerView, Selection
from tokensift.registry import Paper, option, register


@register
@dataclass
class QuantizedPruning(LowBits, Wrapper):
    """The wrapped press picks the tokens to keep, all packed at ``bits`` bits (default 4); the rest is evicted."""

    name: ClassVar[str] = "qprune"
    paper: ClassVar[Paper] = Paper(
        "Zhang et al., 2024",
        "More Tokens, Lower Precision: Towards the Optimal Token-Precision Trade-off in KV Cache Compression",
        arxiv="2412.12706",
    )
    summary: ClassVar[str] = "kept tokens packed at --bits (default 4, KIVI layout), the rest evicted"

    bits: int = option(4, low=2, high=8)
    full: float = option(0.0, low=0.0, high=1.0)
    """Share of each head's kept tokens, its most recent ones, stored at full precision instead of packed."""
    press: Press = field(default_factory=SnapKV)

    def build(
        self, keys: Tensor, values: Tensor, selection: list[Selection], views: list[LayerView], starts: list[int]
    ) -> QuantizedLayer:
        recent: list[list[Tensor]] = []
        packed: list[list[Tensor]] = []
        for row in selection:
            cuts = [kept.numel() - round(self.full * kept.numel()) for kept in row]
            recent.append([kept[cut:] for kept, cut in zip(row, cuts, strict=True)])
            packed.append([kept[:cut] for kept, cut in zip(row, cuts, strict=True)])
        return QuantizedLayer.quantized(keys, values, recent, starts, bits=self.bits, group=self.group, packed=packed)

    def keep_for_bytes(self, fraction: float, head_dim: int, itemsize: int) -> float | None:
        """Kept share ``fraction / (full + (1 - full) * low)`` (``low``: a packed token's bytes over a full one's);
        None where that exceeds every token (then ``quant``, which keeps every token, fits the budget)."""
        keep = fraction / (self.full + (1 - self.full) * self.packed_share(head_dim, itemsize))
        return None if keep > 1 else keep
