"""KeyDiff: keep the keys least similar to the average key.

Park et al., 2025, "KeyDiff: Key Similarity-Based KV Cache Eviction for Long-Context LLM Inference in
Resource-Constrained Environments" (arXiv:2504.15364): distinctive keys (low cosine similarity to the
mean key) carry the information; no attention needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from tokensift.kv.press import ScorerPress
from tokensift.kv.view import LayerView
from tokensift.registry import Paper, register
from tokensift.scores import key_diff_score


@register
@dataclass
class KeyDiff(ScorerPress):
    """Negative cosine similarity to the head's mean key."""

    name: ClassVar[str] = "keydiff"
    paper: ClassVar[Paper] = Paper(
        "Park et al., 2025",
        "KeyDiff: Key Similarity-Based KV Cache Eviction for Long-Context LLM Inference in Resource-Constrained "
        "Environments",
        arxiv="2504.15364",
    )
    summary: ClassVar[str] = "keep the keys least similar to the mean key"

    def score(self, view: LayerView) -> Tensor:
        return key_diff_score(view.keys)[0]
