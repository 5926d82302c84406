"""tokensift: find the informative tokens in a sequence and act on them.

Three small cores — :mod:`tokensift.scores` (per-token informativeness), :mod:`tokensift.select`
(budgets and policies) and :mod:`tokensift.reduce` (evict, merge, drop) — and thin adapters per target,
each with a public face: ``from tokensift import kv, text, encoder``. Methods register themselves;
:mod:`tokensift.methods` lists, composes and builds them. ``load_model`` and ``inspect_text`` (per-token
surprisal) load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from tokensift.errors import TokensiftError

__version__ = "0.1.0"
_FACE = {
    "load_model": "tokensift.models",
    "inspect_text": "tokensift.inspection",
    "FlagRule": "tokensift.inspection",
}
__all__ = ["TokensiftError", "__version__", *_FACE]


def __getattr__(name: str) -> Any:
    if name in _FACE:
        return getattr(importlib.import_module(_FACE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
