"""Redundancy: how many near-duplicates a token has among the others."""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F


def energy_score(metric: Tensor, *, valid: Tensor, margin: float, alpha: float = 1.0) -> Tensor:
    """PiToMe's energy ``[B, N]`` (Tran et al., 2024, "Accelerating Transformers with Spectrum-Preserving
    Token Merging"): the mean over the other real tokens of ``f(cos(x_i, x_j))`` with
    ``f(s) = s - margin`` above the margin and ``alpha (exp(s - margin) - 1)`` below it.

    High energy = many similar neighbours (safe to merge); low energy = isolated (keep). Higher is *more
    redundant*, the opposite of the keep convention, because PiToMe ranks merge candidates by it.
    """
    unit = F.normalize(metric.float(), dim=-1)
    terms = F.elu(unit @ unit.transpose(-1, -2) - margin, alpha=alpha)
    weights = valid[:, None, :].to(terms.dtype)
    return (terms * weights).sum(-1) / weights.sum(-1).clamp_min(1.0)
