"""Diversity selection: keep a subset whose members are as far apart from each other as possible."""

from __future__ import annotations

import torch
from torch import Tensor

from tokensift.select.matching import cosine_similarity_matrix


def max_min_diversity(features: Tensor, k: Tensor, *, valid: Tensor, protected: Tensor) -> Tensor:
    """Greedy max-min diversity (DivPrune: Alvar et al., 2025, "DivPrune: Diversity-based Visual Token
    Pruning for Large Multimodal Models"): keep mask ``[B, N]`` with ``k[b]`` tokens per row.

    Distances are cosine distances of ``features [B, N, C]``. The selection starts from the protected
    tokens, or, in a row without any, from the token farthest from its nearest neighbour (the paper's
    seed); it then repeatedly adds the token whose distance to the selected set is largest.
    """
    distance = 1.0 - cosine_similarity_matrix(features)
    distance = distance.masked_fill(~valid[:, None, :], float("inf"))
    selected = protected & valid
    has_any = selected.any(dim=1)
    to_selected = distance.masked_fill(~selected[:, :, None], float("inf")).amin(dim=1)
    eye = torch.eye(distance.shape[-1], dtype=torch.bool, device=distance.device)
    nearest = distance.masked_fill(eye, float("inf")).amin(dim=-1)
    min_dist = torch.where(has_any[:, None], to_selected, nearest)
    rows = torch.arange(distance.shape[0], device=distance.device)
    need = (k - selected.sum(dim=1)).clamp_min(0)
    for _ in range(int(need.max().item()) if need.numel() else 0):
        active = need > 0
        candidates = valid & ~selected & active[:, None]
        pick = min_dist.masked_fill(~candidates, float("-inf")).argmax(dim=1)
        picked = candidates[rows, pick]
        selected[rows[picked], pick[picked]] = True
        update = distance[rows, pick]
        new_min = torch.where(has_any[:, None], torch.minimum(min_dist, update), update)
        min_dist = torch.where(picked[:, None], new_min, min_dist)
        has_any |= picked
        need = need - picked.long()
    return selected
