"""Knorm: keep the keys with the lowest L2 norm.

Devoto et al., 2024, "A Simple and Effective L2 Norm-Based Strategy for KV Cache Compression"
(arXiv:2406.11430): key norm is inversely correlated with the attention a key receives, so low-norm keys
are kept. Needs no attention weights at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from tokensift.kv.press import ScorerPress
from tokensift.kv.view import LayerView
from tokensift.registry import Paper, register
from tokensift.scores import key_norm_score


@register
@dataclass
class Knorm(ScorerPress):
    """Negative key norm per head."""

    name: ClassVar[str] = "knorm"
    paper: ClassVar[Paper] = Paper(
        "Devoto et al., 2024",
        "A Simple and Effective L2 Norm-Based Strategy for KV Cache Compression",
        arxiv="2406.11430",
    )
    summary: ClassVar[str] = "keep the lowest-norm keys"

    def score(self, view: LayerView) -> Tensor:
        return key_norm_score(view.keys)[0]
