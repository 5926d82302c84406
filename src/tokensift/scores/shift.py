"""Representation shift: how much a block changes each token."""

from __future__ import annotations

from torch import Tensor


def representation_shift(before: Tensor, after: Tensor) -> Tensor:
    """``||after - before||_2`` per token, ``[..., N, D] -> [..., N]``.

    Choi et al., 2025, "Representation Shift: Unifying Token Compression with FlashAttention": tokens a
    block changes most carry the most information; the score needs no attention weights, so the model
    keeps its fused attention kernel.
    """
    return (after.float() - before.float()).norm(dim=-1)
