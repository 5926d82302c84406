"""Per-row budgets on padded batches: each row keeps its own number of tokens.

Batched encoders pad rows to one length; a row's budget must depend only on that row, so a row in a
batch is reduced exactly as it would be alone. These selectors return boolean keep masks ``[B, N]``
and never keep padding (``valid`` False) or drop a protected token.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rank_descending(scores: Tensor) -> Tensor:
    """Rank of each entry along the last dim (0 = highest); ties go to the earlier position."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    return torch.empty_like(order).scatter_(
        -1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order)
    )


def topk_mask(scores: Tensor, k: Tensor, *, valid: Tensor, protected: Tensor | None = None) -> Tensor:
    """Keep, per row ``b``, the ``k[b]`` highest ``scores [B, N]`` among ``valid`` tokens.

    Protected tokens are always kept and count toward ``k`` (a row keeps at least its protected tokens).
    """
    boosted = scores.float().masked_fill(~valid, float("-inf"))
    if protected is not None:
        boosted = boosted.masked_fill(protected & valid, float("inf"))
    return (rank_descending(boosted) < k[:, None]) & valid
