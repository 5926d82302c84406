"""Eviction: keep only the selected positions of a ``[..., T, D]`` tensor (a KV cache, hidden states)."""

from __future__ import annotations

from torch import Tensor


def gather_tokens(states: Tensor, indices: Tensor) -> Tensor:
    """``states [..., T, D]``, ``indices [..., k]`` -> ``[..., k, D]``: a new tensor, storage really smaller."""
    return states.gather(-2, indices[..., None].expand(*indices.shape, states.shape[-1]))
