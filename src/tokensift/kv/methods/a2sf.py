"""A2SF: accumulated attention with a forgetting factor.

Jo & Shin, 2024, "A2SF: Accumulative Attention Scoring with Forgetting Factor for Token Pruning in
Transformer Decoder" (arXiv:2407.20485): under causal masking early tokens are summed over more queries
than late ones, so H2O's sum favours them; multiplying past contributions by ``alpha`` at every step
(``A_k = sum_q alpha^(n-q) S_qk``) makes old and new tokens comparable. Updates online while decoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tokensift.kv.methods.h2o import H2O
from tokensift.registry import Paper, option, register


@register
@dataclass
class A2SF(H2O):
    """H2O's score with forgetting factor ``forgetting`` (alpha) and no separate recent window."""

    name: ClassVar[str] = "a2sf"
    paper: ClassVar[Paper] = Paper(
        "Jo & Shin, 2024",
        "A2SF: Accumulative Attention Scoring with Forgetting Factor for Token Pruning in Transformer Decoder",
        arxiv="2407.20485",
    )
    summary: ClassVar[str] = "accumulated attention with a forgetting factor"

    recent_share: float = option(0.0, low=0.0, high=1.0)
    forgetting: float = option(0.98, low=0.0, high=1.0, open_low=True)
