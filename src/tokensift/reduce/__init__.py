"""What happens to the tokens that were not selected: evicted (gathered away), merged, dropped."""

from tokensift.reduce.drop import drop_units
from tokensift.reduce.evict import gather_tokens

__all__ = ["drop_units", "gather_tokens"]
