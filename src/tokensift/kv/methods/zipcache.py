"""ZipCache: salient tokens by *normalised* attention at full precision, the rest in a few bits.

He et al., 2024, "ZipCache: Accurate and Efficient KV Cache Quantization with Salient Token Identification"
(arXiv:2405.14256). Accumulated attention favours early tokens (more queries see them); dividing each
token's total by the number of queries that can see it (:func:`tokensift.scores.attention_received` with
``normalize``) removes that bias. The salient tokens stay at full precision and the rest is packed at
``bits`` bits in KIVI's layout. Differences from the paper: it scores from a probe subset of the queries
(recent plus random rows, so FlashAttention can serve the rest) and keeps salient tokens at 4 bits rather
than full precision; here every query row scores (the exact normalised score the probe approximates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from tokensift.kv.methods.quant import LowBits
from tokensift.kv.press import ScorerPress
from tokensift.kv.view import LayerView
from tokensift.registry import Paper, register
from tokensift.scores import attention_received


@register
@dataclass
class ZipCache(LowBits, ScorerPress):
    """Normalised accumulated attention picks the full-precision tokens; the rest is packed at ``bits`` bits."""

    name: ClassVar[str] = "zipcache"
    paper: ClassVar[Paper] = Paper(
        "He et al., 2024",
        "ZipCache: Accurate and Efficient KV Cache Quantization with Salient Token Identification",
        arxiv="2405.14256",
    )
    summary: ClassVar[str] = "normalised attention picks full-precision tokens, the rest packed at --bits"
    query_rows = None

    def score(self, view: LayerView) -> Tensor:
        return attention_received(view.queries, view.keys, scaling=view.scaling, normalize=True)[0]
