"""Scores from the key vectors alone: no attention weights, so they cost one pass over the cache.

Convention for every score in :mod:`tokensift.scores`: higher means more worth keeping.
"""

from __future__ import annotations

import torch
from torch import Tensor


def key_norm_score(keys: Tensor) -> Tensor:
    """Negative L2 norm of each key, ``[..., T, D] -> [..., T]``.

    Devoto et al., 2024, "A Simple and Effective L2 Norm-Based Strategy for KV Cache Compression":
    keys with a *low* norm receive high attention, so the lowest norms are kept.
    """
    return -keys.float().norm(dim=-1)


def _mean_key(keys: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over positions of ``keys [B, H, T, D]``, counting only ``mask [B, T]`` positions if given."""
    if mask is None:
        return keys.mean(dim=-2, keepdim=True)
    weights = mask[:, None, :, None].to(keys.dtype)
    return (keys * weights).sum(-2, keepdim=True) / weights.sum(-2, keepdim=True).clamp_min(1.0)


def key_diff_score(keys: Tensor, *, mask: Tensor | None = None) -> Tensor:
    """Negative cosine similarity of each key to the mean key, ``[B, H, T, D] -> [B, H, T]``.

    Park et al., 2025, "KeyDiff: Key Similarity-Based KV Cache Eviction for Long-Context LLM Inference":
    keys that differ most from the average key are the distinctive ones to keep. ``mask [B, T]``
    (True = real token) leaves padding out of the mean.
    """
    keys = keys.float()
    return -torch.nn.functional.cosine_similarity(keys, _mean_key(keys, mask), dim=-1)


def key_distance_to_mean(keys: Tensor, *, mask: Tensor | None = None) -> Tensor:
    """Euclidean distance of each key to the mean key, ``[B, H, T, D] -> [B, H, T]`` (padding excluded)."""
    keys = keys.float()
    return (keys - _mean_key(keys, mask)).norm(dim=-1)
