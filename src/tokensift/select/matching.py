"""Matching tokens to merge partners: ToMe's bipartite soft matching and PiToMe's energy-ranked variant.

A matching is returned as a *target map* ``[B, N]``: the position each token is merged into, its own
position when it stays (see :func:`tokensift.reduce.merge.assign_slots`). Sources and destinations
are disjoint, so every target is a token that stays.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from tokensift.select.rowwise import rank_descending


def cosine_similarity_matrix(metric: Tensor) -> Tensor:
    """``[B, N, C] -> [B, N, N]`` cosine similarity of every pair of tokens."""
    unit = F.normalize(metric.float(), dim=-1)
    return unit @ unit.transpose(-1, -2)


def best_match(similarity: Tensor, src: Tensor, dst: Tensor) -> tuple[Tensor, Tensor]:
    """For each source token, its most similar destination: ``(score [B, N], index [B, N])``.

    ``score`` is ``-inf`` for tokens that are not sources (or when a row has no destination).
    """
    masked = similarity.masked_fill(~dst[:, None, :], float("-inf"))
    score, index = masked.max(dim=-1)
    return score.masked_fill(~src, float("-inf")), index


def best_sources(score: Tensor, r: Tensor) -> Tensor:
    """Mask ``[B, N]`` of the ``r[b]`` best-scoring sources of each row (finite scores only)."""
    return (rank_descending(score) < r[:, None]) & torch.isfinite(score)


def merge_best_sources(score: Tensor, match: Tensor, r: Tensor) -> Tensor:
    """Target map in which, per row ``b``, the ``r[b]`` best-scoring sources merge into their match."""
    positions = torch.arange(score.shape[-1], device=score.device).expand_as(match)
    return torch.where(best_sources(score, r), match, positions)


def bipartite_soft_matching(metric: Tensor, r: Tensor, *, valid: Tensor, protected: Tensor) -> Tensor:
    """ToMe's matching (Bolya et al., 2023, "Token Merging: Your ViT But Faster").

    Tokens alternate between set A (even positions) and set B (odd positions); each A token draws an
    edge to its most similar B token (cosine of ``metric [B, N, C]``, the keys averaged over heads in
    the paper) and the ``r[b]`` most similar edges are merged. Protected tokens and padding take no
    part, so at most half of a row's mergeable tokens can go in one step.
    """
    even = torch.arange(metric.shape[1], device=metric.device) % 2 == 0
    mergeable = valid & ~protected
    score, match = best_match(cosine_similarity_matrix(metric), mergeable & even, mergeable & ~even)
    return merge_best_sources(score, match, r)


def energy_matching(metric: Tensor, energy: Tensor, r: Tensor, *, valid: Tensor, protected: Tensor) -> Tensor:
    """PiToMe's matching (Tran et al., 2024, "Accelerating Transformers with Spectrum-Preserving Token Merging").

    Only the ``2 r[b]`` tokens with the highest energy (the most redundant ones, see
    :func:`tokensift.scores.energy_score`) may merge; low-energy, isolated tokens are protected. The
    candidates alternate by energy rank between sources and destinations and every source merges into
    its most similar destination.
    """
    mergeable = valid & ~protected
    rank = rank_descending(energy.float().masked_fill(~mergeable, float("-inf")))
    candidate = mergeable & (rank < 2 * r[:, None])
    score, match = best_match(
        cosine_similarity_matrix(metric), candidate & (rank % 2 == 0), candidate & (rank % 2 == 1)
    )
    return merge_best_sources(score, match, r)


def bidirectional_matching(scores: Tensor, r: Tensor, *, valid: Tensor, protected: Tensor) -> Tensor:
    """MCTF's two-way bipartite matching (Lee et al., 2024, arXiv:2403.10030) over any pair score ``[B, N, N]``.

    A (even positions) -> B (odd positions) first for ``r // 2`` edges, then B -> the A tokens that stayed for
    the rest, with the same scores; a chain A -> B -> A' is followed so every target is a token that stays.
    """
    n = scores.shape[-1]
    positions = torch.arange(n, device=scores.device).expand_as(valid)
    even = torch.arange(n, device=scores.device) % 2 == 0
    mergeable = valid & ~protected
    first_r = r // 2
    score, match = best_match(scores, mergeable & even, mergeable & ~even)
    first = best_sources(score, first_r)
    target = torch.where(first, match, positions)
    score2, match2 = best_match(scores.transpose(-1, -2), mergeable & ~even, mergeable & even & ~first)
    second = best_sources(score2, r - first.sum(dim=-1))
    target = torch.where(second, match2, target)
    # A tokens that went into a B token that itself moves follow it.
    return torch.where(first & second.gather(-1, target), target.gather(-1, target), target)
