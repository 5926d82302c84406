"""From scores and a budget to kept indices. Budgets are exact token counts; policies are pure functions."""

from tokensift.select.alloc import composite_indices, global_indices, head_adaptive_indices, pyramid_budgets
from tokensift.select.budget import Budget
from tokensift.select.chunks import chunk_indices
from tokensift.select.knapsack import density_order, knapsack_select
from tokensift.select.topk import topk_indices

__all__ = [
    "Budget",
    "chunk_indices",
    "composite_indices",
    "density_order",
    "global_indices",
    "head_adaptive_indices",
    "knapsack_select",
    "pyramid_budgets",
    "topk_indices",
]
