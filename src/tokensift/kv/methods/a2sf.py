"""A2SF: accumulated attention with a forgetting factor.

Jo & Shin, 2024, "A2SF: Accumulative Attention Scoring with Forgetting Factor for Token Pruning in
Transformer Decoder": under causal masking early tokens are summed over more queries than late ones, so
H2O's sum favours them; multiplying past contributions by ``alpha`` at every step
(``A_k = sum_q alpha^(n-q) S_qk``) makes old and new tokens comparable. Updates online while decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokensift.kv.methods.h2o import H2OPress


@dataclass
class A2SFPress(H2OPress):
    """H2O's score with forgetting factor ``forgetting`` (alpha) and no separate recent window."""

    recent_share: float = 0.0
    forgetting: float = 0.98
