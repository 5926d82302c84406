"""tokensift: find the informative tokens in a sequence and act on them.

Three small cores — :mod:`tokensift.scores` (per-token informativeness), :mod:`tokensift.select`
(budgets and policies) and :mod:`tokensift.reduce` (evict, merge, drop) — and thin adapters per target.
Methods are named compositions of the three, listed in :mod:`tokensift.methods`.
"""

from tokensift.errors import TokensiftError

__version__ = "0.1.0"
__all__ = ["TokensiftError", "__version__"]
