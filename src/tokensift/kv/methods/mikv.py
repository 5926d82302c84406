"""MiKV: no token left behind — heavy hitters at full precision, every other token in a few bits.

Yang et al., 2024, "No Token Left Behind: Reliable KV Cache Compression via Importance-Aware Mixed
Precision Quantization" (arXiv:2402.18096). Eviction loses context the model later needs (hallucinated or
unsafe answers); keeping the evicted pairs at low precision recovers most of it at little memory. The
important tokens are H2O's (accumulated attention plus a recent window, :class:`~tokensift.kv.methods.h2o.H2O`),
kept at full precision; the rest is packed at ``bits`` bits in KIVI's layout
(:mod:`tokensift.reduce.quantize`). Differences from the paper: its high-precision tokens are themselves
quantized (e.g. 8-bit) and its queries/keys are channel-balanced against outliers first; here the important
tokens stay at the model's precision and the low-precision layout (per-channel keys) handles the outlier
channels instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tokensift.kv.methods.h2o import H2O
from tokensift.kv.methods.quant import LowBits
from tokensift.registry import Paper, register


@register
@dataclass
class MiKV(LowBits, H2O):
    """H2O's heavy hitters and recent half at full precision, the other tokens at ``bits`` bits."""

    name: ClassVar[str] = "mikv"
    paper: ClassVar[Paper] = Paper(
        "Yang et al., 2024",
        "No Token Left Behind: Reliable KV Cache Compression via Importance-Aware Mixed Precision Quantization",
        arxiv="2402.18096",
    )
    summary: ClassVar[str] = "H2O's tokens at full precision, the rest packed at --bits"
    online = False
