"""Knorm: keep the keys with the lowest L2 norm.

Devoto et al., 2024, "A Simple and Effective L2 Norm-Based Strategy for KV Cache Compression": key
norm is inversely correlated with the attention a key receives, so low-norm keys are kept. Needs no
attention weights at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from tokensift.kv.press import LayerView, Press
from tokensift.scores import key_norm_score


@dataclass
class KnormPress(Press):
    """Negative key norm per head."""

    def score(self, view: LayerView) -> Tensor:
        return key_norm_score(view.keys)[0]
