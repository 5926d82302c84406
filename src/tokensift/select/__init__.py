"""From scores and a budget to kept indices. Budgets are exact token counts; policies are pure functions."""

from tokensift.select.budget import kept_count
from tokensift.select.topk import topk_indices

__all__ = ["kept_count", "topk_indices"]
