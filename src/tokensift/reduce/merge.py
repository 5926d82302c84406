"""Merging tokens: weighted averages over groups, with token sizes carried along.

A reduction step is a *target map* ``[B, N]``: each token's target position (itself when it stays,
``-1`` when dropped). Tokens that are their own target become output slots, kept in position order
so the [CLS] token stays first and padding stays last; merged tokens are averaged into their target's
slot. Token sizes (how many input tokens each one stands for) add up across merges, which is what
ToMe's size-weighted average and proportional attention use (Bolya et al., 2023, "Token Merging:
Your ViT But Faster").
"""

from __future__ import annotations

import torch
from torch import Tensor


def assign_slots(target: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Output slot of every token ``[B, N]`` (``-1``: dropped or padding) and the output's valid mask ``[B, M]``.

    Every target must be a token that stays (one-step merges, as all matchings here produce).
    """
    positions = torch.arange(target.shape[-1], device=target.device)
    stays = (target == positions) & valid
    slot_of = torch.where(stays, stays.long().cumsum(dim=-1) - 1, -1)
    live = valid & (target >= 0)
    slot = torch.where(live, slot_of.gather(-1, target.clamp_min(0)), -1)
    counts = stays.sum(dim=-1)
    width = int(counts.max().item()) if counts.numel() else 0
    return slot, torch.arange(width, device=target.device) < counts[:, None]


def scatter_sum(values: Tensor, slot: Tensor, width: int) -> Tensor:
    """Sum ``values [B, N]`` into ``width`` slots (entries with slot ``-1`` are left out)."""
    kept = torch.where(slot >= 0, values, torch.zeros_like(values))
    out = torch.zeros(values.shape[0], width, dtype=values.dtype, device=values.device)
    return out.scatter_add_(1, slot.clamp_min(0), kept)


def scatter_mean(states: Tensor, slot: Tensor, width: int, weights: Tensor) -> Tensor:
    """Weighted mean of ``states [B, N, D]`` per slot, weights ``[B, N]`` (e.g. token sizes)."""
    w = torch.where(slot >= 0, weights.to(states.dtype).clamp_min(1e-20), 0.0)[..., None]
    index = slot.clamp_min(0)[..., None]
    total = torch.zeros(states.shape[0], width, states.shape[-1], dtype=states.dtype, device=states.device)
    total.scatter_add_(1, index.expand_as(states), states * w)
    norm = torch.zeros(states.shape[0], width, 1, dtype=states.dtype, device=states.device)
    norm.scatter_add_(1, index, w)
    return total / norm.clamp_min(1e-20)


def follow_slots(origin: Tensor, slot: Tensor) -> Tensor:
    """Source tracking: where each input token ``origin [B, N0]`` (its current position or -1) ends up."""
    return torch.where(origin >= 0, slot.gather(-1, origin.clamp_min(0)), -1)


def drop_target(keep: Tensor) -> Tensor:
    """Target map for pruning: kept tokens ``[B, N]`` stay where they are, the others are dropped (-1)."""
    positions = torch.arange(keep.shape[-1], device=keep.device).expand_as(keep)
    return torch.where(keep, positions, -1)
