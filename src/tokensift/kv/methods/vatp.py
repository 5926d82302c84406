"""VATP: value-aware token pruning — attention received times the size of what the token contributes.

Guo et al., 2024, "Attention Score is not All You Need for Token Importance Indicator in KV Cache
Reduction: Value Also Matters" (EMNLP, arXiv:2406.12335): a token's share of an attention output is its
attention weight times its value vector, and value norms are far from uniform (attention sinks draw much
attention but carry small values). So a token scores its accumulated attention (H2O's) times the L1 norm
of its value; the first tokens (the sinks) and H2O's recent window are kept as in the paper's H2O variant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from tokensift.kv.methods.h2o import H2O
from tokensift.kv.view import LayerView
from tokensift.registry import Paper, option, register


@register
@dataclass
class VATP(H2O):
    """H2O's accumulated attention x value L1 norm, per KV head; ``protect_first`` sinks kept."""

    name: ClassVar[str] = "vatp"
    paper: ClassVar[Paper] = Paper(
        "Guo et al., 2024",
        "Attention Score is not All You Need for Token Importance Indicator in KV Cache Reduction: Value Also Matters",
        arxiv="2406.12335",
    )
    summary: ClassVar[str] = "accumulated attention x value L1 norm (value-aware H2O); sinks and recent half kept"
    online = False  # decoding-time updates would need each new token's value norm too

    protect_first: int = option(4, low=0)

    def score(self, view: LayerView) -> Tensor:
        return super().score(view) * view.values[0].float().abs().sum(-1)
