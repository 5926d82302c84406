"""Low-precision storage as a reducer around any press: what it does not select is packed, not evicted.

Liu et al., 2024, "KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache" (arXiv:2402.02750) gives
the layout (keys per channel over groups of ``group`` tokens, values per token over groups of ``group``
channels, :mod:`tokensift.reduce.quantize`); the wrapped press chooses which tokens stay at full precision
(``quant2:snapkv``, ``quant4:kvzip``). The budget counts the tokens *not* kept at full precision, so
``--ratio 0.875`` keeps 12.5 % of the context at full precision and packs the other 87.5 % at ``bits`` bits;
:meth:`LowBits.keep_for_bytes` turns a bytes budget into that ratio.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor

from tokensift.kv.lowbits import QuantizedLayer
from tokensift.kv.methods.snapkv import SnapKV
from tokensift.kv.press import Press, Wrapper
from tokensift.kv.view import LayerView, Selection
from tokensift.reduce.quantize import check_bits, packed_bytes_per_token
from tokensift.registry import Paper, option, register

KIVI = Paper("Liu et al., 2024", "KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache", arxiv="2402.02750")


@dataclass
class LowBits:
    """The low-precision reducer: ``bits`` (2, 4 or 8) and the quantization ``group`` (KIVI: 32)."""

    bits: int = option(2, low=2, high=8)
    group: int = option(32, low=1)
    reducer: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()  # type: ignore[misc]  # the press's own checks (a mixin before a Press)
        check_bits(self.bits)

    def build(
        self, keys: Tensor, values: Tensor, selection: list[Selection], views: list[LayerView], starts: list[int]
    ) -> QuantizedLayer:
        return QuantizedLayer.quantized(keys, values, selection, starts, bits=self.bits, group=self.group)

    def packed_share(self, head_dim: int, itemsize: int) -> float:
        """A packed token's bytes over a full-precision one's (``itemsize`` bytes per element)."""
        return packed_bytes_per_token(head_dim, self.bits, self.group) / (2 * head_dim * itemsize)

    def keep_for_bytes(self, fraction: float, head_dim: int, itemsize: int) -> float | None:
        """Full-precision share ``f`` with ``f + (1 - f) * low = fraction`` (``low``: a packed token's bytes over a
        full one's); None below ``low`` (packing every token still stores more)."""
        low = self.packed_share(head_dim, itemsize)
        if fraction < low:
            return None
        return min(1.0, (fraction - low) / (1 - low))


@register
@dataclass
class Quantize(LowBits, Wrapper):
    """The wrapped press picks the full-precision tokens; every other token is packed at ``bits`` bits."""

    name: ClassVar[str] = "quant"
    paper: ClassVar[Paper] = KIVI
    summary: ClassVar[str] = "unselected tokens packed at --bits (KIVI layout) instead of evicted"

    press: Press = field(default_factory=SnapKV)


@register
@dataclass
class Quantize4(Quantize):
    """``quant`` at 4 bits: the wrapped press picks the full-precision tokens, the rest is packed at 4 bits."""

    name: ClassVar[str] = "quant4"
    summary: ClassVar[str] = "unselected tokens packed at 4 bits (KIVI layout)"

    bits: int = option(4, low=2, high=8)


@register
@dataclass
class Quantize2(Quantize):
    """``quant`` at 2 bits: the wrapped press picks the full-precision tokens, the rest is packed at 2 bits."""

    name: ClassVar[str] = "quant2"
    summary: ClassVar[str] = "unselected tokens packed at 2 bits (KIVI layout)"

    bits: int = option(2, low=2, high=8)
