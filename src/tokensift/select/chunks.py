"""Chunk-level selection: keep whole contiguous spans instead of scattered tokens.

Liu et al., 2025, "ChunkKV: Semantic-Preserving KV Cache Compression for Efficient Long-Context LLM
Inference": a fact spread over several tokens (a number split into digits, a name) survives only if all
its tokens survive, so tokens are scored per chunk and chunks are kept or dropped as a whole.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tokensift.errors import ParameterError


def chunk_indices(scores: Tensor, k: int, chunk: int, *, protect_first: int = 0, protect_last: int = 0) -> Tensor:
    """Ascending indices of exactly ``k`` of ``T`` positions chosen chunk by chunk, ``scores [T]``.

    Chunks of ``chunk`` consecutive tokens are ranked by their mean score and taken whole, best first,
    while they fit; the slots left over (fewer than one chunk) go to the best single tokens of the next
    chunks in rank order. Protected first/last positions are always kept and count toward ``k``.
    """
    n = scores.shape[-1]
    if chunk < 1:
        raise ParameterError(f"chunk length must be at least 1, got {chunk}")
    if not 0 <= k <= n:
        raise ParameterError(f"cannot keep {k} of {n} positions")
    if protect_first < 0 or protect_last < 0 or protect_first + protect_last > k:
        raise ParameterError(f"{protect_first} + {protect_last} protected positions do not fit in a budget of {k}")
    positions = torch.arange(n, device=scores.device)
    keep = (positions < protect_first) | (positions >= n - protect_last)
    n_chunks = -(-n // chunk)
    padded = torch.full((n_chunks * chunk,), float("nan"), device=scores.device)
    padded[:n] = scores.float()
    order = torch.sort(padded.view(n_chunks, chunk).nanmean(-1), descending=True, stable=True).indices
    free = k - int(keep.sum())
    missing = torch.zeros(n_chunks * chunk, dtype=torch.long, device=scores.device)
    missing[:n] = (~keep).long()
    need = missing.view(n_chunks, chunk).sum(-1)[order]  # unprotected tokens per chunk, in rank order
    whole = order[need.cumsum(0) <= free]  # take whole chunks while they fit (cumsum is monotone)
    chunk_of = positions // chunk
    keep |= torch.isin(chunk_of, whole)
    free = k - int(keep.sum())
    if free > 0:  # the best tokens of the best chunk that did not fit fill the remaining slots
        partial = order[len(whole)]
        candidates = ((chunk_of == partial) & ~keep).nonzero().flatten()
        best = scores[candidates].float().sort(descending=True, stable=True).indices[:free]
        keep[candidates[best]] = True
    return keep.nonzero().flatten()
