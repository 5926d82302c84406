"""What happens to the tokens that were not selected: evicted (gathered away), merged, dropped."""

from tokensift.reduce.evict import gather_tokens

__all__ = ["gather_tokens"]
