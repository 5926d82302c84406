"""Exact budget selection: keep the items (words, phrases, sentences) worth most within a token budget.

Each item has a value (its informativeness) and an integer cost (its tokens on the target tokenizer).
Keeping the highest-value items until the budget is spent is a 0/1 knapsack; a percentile threshold
(Selective Context, LLMLingua) ignores the costs and so misses the budget. :func:`knapsack_select` solves
it exactly by dynamic programming over integer costs and falls back to density order for instances too
large for the table.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tokensift.errors import ParameterError

MAX_CELLS = 50_000_000
"""Largest ``items x (budget + 1)`` decision table solved exactly (one byte per cell)."""


def _shifted(values: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """Make values non-negative by adding a constant per token.

    Callers fill the budget, and among selections of equal total cost the shift adds the same amount,
    so the best selection is unchanged while negative-valued items stay eligible.
    """
    density = np.divide(values, np.maximum(costs, 1))
    shift = max(0.0, -float(density.min())) if len(values) else 0.0
    return values + shift * costs


def density_order(values: Sequence[float], costs: Sequence[int]) -> list[int]:
    """Item indices by value per token, highest first (ties: earlier item first)."""
    v = np.asarray(values, dtype=np.float64)
    c = np.maximum(np.asarray(costs, dtype=np.float64), 1.0)
    return sorted(range(len(v)), key=lambda i: (-v[i] / c[i], i))


def knapsack_select(
    values: Sequence[float], costs: Sequence[int], budget: int, *, max_cells: int = MAX_CELLS
) -> list[int]:
    """Ascending indices of the items with the highest total value whose total cost is at most ``budget``.

    Exact (dynamic programming) when ``len(values) * (budget + 1) <= max_cells``; otherwise items are
    taken in order of value per token, skipping those that no longer fit. Zero-cost items are always kept.
    """
    if len(values) != len(costs):
        raise ValueError(f"{len(values)} values but {len(costs)} costs")
    if budget < 0:
        raise ParameterError(f"budget must be at least 0 tokens, got {budget}")
    c = np.asarray(costs, dtype=np.int64)
    if (c < 0).any():
        raise ValueError("item costs must be non-negative")
    v = _shifted(np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0), c)
    if len(v) * (budget + 1) > max_cells:
        return _greedy(v, c, budget)
    best = np.zeros(budget + 1)
    take = np.zeros((len(v), budget + 1), dtype=bool)
    for i, (value, cost) in enumerate(zip(v, c, strict=True)):
        if cost > budget:
            continue
        candidate = best[: budget + 1 - cost] + value
        better = candidate > best[cost:]
        take[i, cost:] = better
        best[cost:] = np.where(better, candidate, best[cost:])
    chosen, room = [], budget
    for i in range(len(v) - 1, -1, -1):
        if take[i, room]:
            chosen.append(i)
            room -= int(c[i])
    return sorted(chosen)


def _greedy(values: np.ndarray, costs: np.ndarray, budget: int) -> list[int]:
    chosen, room = [], budget
    for i in density_order(values.tolist(), costs.tolist()):
        if costs[i] <= room:
            chosen.append(i)
            room -= int(costs[i])
    return sorted(chosen)
