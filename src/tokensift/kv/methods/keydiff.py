"""KeyDiff: keep the keys least similar to the average key.

Park et al., 2025, "KeyDiff: Key Similarity-Based KV Cache Eviction for Long-Context LLM Inference":
distinctive keys (low cosine similarity to the mean key) carry the information; no attention needed.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from tokensift.kv.press import LayerView, Press
from tokensift.scores import key_diff_score


@dataclass
class KeyDiffPress(Press):
    """Negative cosine similarity to the head's mean key."""

    def score(self, view: LayerView) -> Tensor:
        return key_diff_score(view.keys)[0]
