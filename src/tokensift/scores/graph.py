"""Importance from the attention graph: a token matters if important tokens attend to it."""

from __future__ import annotations

from torch import Tensor


def weighted_page_rank(attention: Tensor, *, valid: Tensor, iterations: int = 30) -> Tensor:
    """Zero-TPrune's Weighted Page Rank (Wang et al., 2024, "Zero-TPrune: Zero-Shot Token Pruning
    through Leveraging of the Attention Graph in Pre-Trained Transformers"): ``[B, H, N, N] -> [B, H, N]``.

    The attention matrix (rows: queries, a distribution over keys) is the adjacency matrix of a graph;
    starting from a uniform score over real tokens, ``s <- A^T s`` is iterated, so each key collects the
    importance of the queries that attend to it. Padding starts at 0 and, receiving no attention, stays 0.
    """
    weights = valid.to(attention.dtype)
    score = (weights / weights.sum(-1, keepdim=True).clamp_min(1.0))[:, None, :].expand(attention.shape[:-1])
    step = score[..., None, :]  # [B, H, 1, N]: a row vector, so each step is one batched matrix product
    for _ in range(iterations):
        step = step @ attention
    return step[..., 0, :]
