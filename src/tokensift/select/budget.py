"""Budgets: how many of ``n`` tokens to keep, from a kept ratio or an absolute count."""

from __future__ import annotations

import math

from tokensift.errors import ParameterError


def kept_count(n: int, *, keep_ratio: float | None = None, keep_tokens: int | None = None) -> int:
    """Number of tokens to keep out of ``n``: ``round(keep_ratio * n)`` or ``keep_tokens``, exactly one given.

    Raises :class:`ParameterError` for a ratio outside [0, 1] or a count outside [0, n].
    """
    if (keep_ratio is None) == (keep_tokens is None):
        raise ParameterError("give exactly one of keep_ratio and keep_tokens")
    if keep_tokens is not None:
        if not 0 <= keep_tokens <= n:
            raise ParameterError(f"cannot keep {keep_tokens} tokens out of {n}")
        return keep_tokens
    assert keep_ratio is not None
    if not (0.0 <= keep_ratio <= 1.0) or math.isnan(keep_ratio):
        raise ParameterError(f"keep ratio must be in [0, 1], got {keep_ratio}")
    return round(keep_ratio * n)
