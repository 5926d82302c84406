"""Top-k selection with protected positions (e.g. attention sinks and the most recent tokens)."""

from __future__ import annotations

import torch
from torch import Tensor

from tokensift.errors import ParameterError


def topk_indices(scores: Tensor, k: int, *, protect_first: int = 0, protect_last: int = 0) -> Tensor:
    """Indices of the ``k`` highest scores along the last dim, in ascending position order.

    The first ``protect_first`` and last ``protect_last`` positions are always kept and count toward
    ``k``. Ties go to the earlier position, so the result is deterministic.
    """
    n = scores.shape[-1]
    if not 0 <= k <= n:
        raise ParameterError(f"cannot keep {k} of {n} positions")
    if protect_first < 0 or protect_last < 0 or protect_first + protect_last > k:
        raise ParameterError(
            f"{protect_first} first + {protect_last} last protected positions do not fit in a budget of {k}"
        )
    boosted = scores.float().clone()
    positions = torch.arange(n, device=scores.device)
    protected = (positions < protect_first) | (positions >= n - protect_last)
    boosted[..., protected] = float("inf")
    # stable sort on descending score: equal scores keep position order
    order = torch.sort(boosted, dim=-1, descending=True, stable=True).indices[..., :k]
    return order.sort(dim=-1).values
