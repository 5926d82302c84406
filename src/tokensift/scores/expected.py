"""Expected attention: the attention a key will receive from *future* queries, estimated without them.

Devoto et al., 2025, "Expected Attention: KV Cache Compression by Estimating Attention from Future
Queries Distribution" (kvpress). Queries are modelled as Gaussian with the mean ``mu`` and covariance
``S`` of the queries seen so far (before rotary embedding), rotated by the *average* rotary rotation of
the next ``n_future`` positions. For a Gaussian query, ``E[exp(q.k / sqrt d)] = exp(mu.k / sqrt d +
k^T S k / 2d)``; its softmax over keys, times the value norm (what a key can contribute to the output),
is the score.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def rope_angles(inv_freq: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
    """``cos, sin [..., D]`` of rotary embedding (Hugging Face half-split layout) at ``positions``."""
    angles = positions.float()[..., None] * inv_freq.float()
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def unrotate(states: Tensor, positions: Tensor, inv_freq: Tensor) -> Tensor:
    """Undo rotary embedding: ``states [B, H, T, D]`` at ``positions [B, T]`` back to their raw values."""
    cos, sin = rope_angles(inv_freq, positions)
    return states.float() * cos[:, None] - _rotate_half(states.float()) * sin[:, None]


def average_rotation(inv_freq: Tensor, start: int, count: int) -> Tensor:
    """Mean rotary rotation matrix ``[D, D]`` over positions ``start .. start + count - 1``."""
    cos, sin = rope_angles(inv_freq, torch.arange(start, start + count, device=inv_freq.device))
    dim = cos.shape[-1]
    half = dim // 2
    swap = torch.zeros(dim, dim, device=inv_freq.device)
    swap[half:, :half] = torch.eye(half, device=inv_freq.device)
    swap[:half, half:] = -torch.eye(half, device=inv_freq.device)
    rotations = cos[:, :, None] * torch.eye(dim) + sin[:, :, None] * swap  # R = diag(cos) + diag(sin) P
    return rotations.mean(0)


def expected_attention_scores(
    queries: Tensor, keys: Tensor, values: Tensor, rotation: Tensor, *, use_covariance: bool = True
) -> Tensor:
    """Expected attention ``[B, Hkv, T]`` from raw queries ``[B, H, q, D]`` (statistics over the ``q`` rows).

    ``rotation [D, D]`` is :func:`average_rotation` for the positions the future queries will take.
    """
    batch, heads, _, dim = queries.shape
    kv_heads, n = keys.shape[1], keys.shape[2]
    queries = queries.float()
    mean = queries.mean(2)  # [B, H, D]
    mean = mean @ rotation.T
    keys_full = keys.float().repeat_interleave(heads // kv_heads, dim=1)  # [B, H, T, D]
    logits = (keys_full @ mean[..., None]).squeeze(-1) / dim**0.5
    if use_covariance:
        centred = queries - queries.mean(2, keepdim=True)
        cov = centred.transpose(-1, -2) @ centred / max(1, queries.shape[2])
        cov = rotation @ cov @ rotation.T
        logits = logits + ((keys_full @ cov) * keys_full).sum(-1) / dim / 2
    probs = torch.softmax(logits, dim=-1).view(batch, kv_heads, heads // kv_heads, n).mean(2)
    return probs * values.float().norm(dim=-1)
