"""Merging evicted KV pairs into kept ones so the attention they received is not lost.

For a query ``q`` attention over a group ``G`` of tokens gives ``sum_i exp(q.k_i) v_i`` out of a total
``sum_i exp(q.k_i)``. Keeping only token ``j`` with the attention-weighted mean value of the group,
``v'_j = sum_i a_i v_i / sum_i a_i``, and a logit raised by the group's log mass relative to ``j``,
``b_j = log(sum_i a_i / a_j)``, reproduces both exactly for any query whose attention is proportional to
``a`` over ``G`` — the reference queries the weights came from (the observation window) — and
approximately for queries close to them. Keys stay those of the kept token, so rotary positions stay
intact. These are pure functions over one (row, head): ``[T, D]`` tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor


def nearest_kept(keys: Tensor, kept: Tensor, *, min_similarity: float = -1.0) -> Tensor:
    """For every position ``[T]``: the index into ``kept`` of the kept key most similar (cosine) to its key,
    ``-1`` where the best similarity is below ``min_similarity``; kept tokens map to themselves."""
    unit = torch.nn.functional.normalize(keys.float(), dim=-1)
    similarity = unit @ unit[kept].T  # [T, k]
    best, target = similarity.max(-1)
    target = torch.where(best >= min_similarity, target, -1)
    target[kept] = torch.arange(kept.numel(), device=keys.device)
    return target


def next_kept(n: int, kept: Tensor) -> Tensor:
    """For every position ``[T]``: the index into ``kept`` of the first kept token at or after it (the last
    kept token for positions after every kept one) — merging into the following neighbour, as CaM does."""
    after = torch.searchsorted(kept, torch.arange(n, device=kept.device))
    return after.clamp_max(kept.numel() - 1)


def fold_into_kept(
    keys: Tensor, values: Tensor, kept: Tensor, weights: Tensor, target: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Merge every token into ``kept[target[i]]`` (``target -1``: dropped) with attention weights ``weights
    [T]`` (positive). Returns the kept keys ``[k, D]`` (unchanged), their merged values and their log mass
    ``[k]`` (0 for a token that absorbed nothing)."""
    k = kept.numel()
    w = weights.float().clamp_min(1e-12)
    live = target >= 0
    index = target.clamp_min(0)
    w_live = torch.where(live, w, torch.zeros_like(w))
    mass = torch.zeros(k, device=keys.device).index_add_(0, index, w_live)
    summed = torch.zeros(k, values.shape[-1], device=keys.device).index_add_(0, index, values.float() * w_live[:, None])
    merged = (summed / mass[:, None]).to(values.dtype)
    log_mass = (mass / w[kept]).log()
    return keys[kept], merged, log_mass


def add_values(values: Tensor, kept: Tensor, weights: Tensor, target: Tensor) -> Tensor:
    """CaM's value update: each dropped token's value added to its target's, scaled by ``a_i / a_j`` (at most
    1), so the target carries the numerator the dropped token contributed; returns the kept values ``[k, D]``."""
    w = weights.float().clamp_min(1e-12)
    is_kept = torch.zeros_like(target, dtype=torch.bool)
    is_kept[kept] = True
    moving = (target >= 0) & ~is_kept
    index = target.clamp_min(0)
    ratio = torch.where(moving, (w / w[kept][index]).clamp_max(1.0), torch.zeros_like(w))
    added = torch.zeros(kept.numel(), values.shape[-1], device=values.device)
    added.index_add_(0, index, values.float() * ratio[:, None])
    return (values[kept].float() + added).to(values.dtype)
