"""Token merging and pruning inside Hugging Face encoders (BERT family, ViT, CLIP vision).

``with tokensift.encoder.reduce(model, "tome", ratio=0.5) as patch: ...`` reduces tokens layer by layer
in an unmodified model; :func:`sentence_embeddings` gives sentence-transformers-compatible embeddings
(mean pooling weighted by token sizes, L2-normalised). Methods live in :mod:`tokensift.encoder.methods`
and are registered in :mod:`tokensift.methods` under target ``"encoder"``.

Attributes are imported on first use: importing this package (as the method registry does) loads
neither transformers nor the patch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokensift.encoder.embed import EmbedResult, sentence_embeddings
    from tokensift.encoder.patch import EncoderPatch, TokenState, apply, reduce, remove
    from tokensift.encoder.schedule import Schedule

_LAZY = {
    "EncoderPatch": "tokensift.encoder.patch",
    "TokenState": "tokensift.encoder.patch",
    "apply": "tokensift.encoder.patch",
    "reduce": "tokensift.encoder.patch",
    "remove": "tokensift.encoder.patch",
    "Schedule": "tokensift.encoder.schedule",
    "EmbedResult": "tokensift.encoder.embed",
    "sentence_embeddings": "tokensift.encoder.embed",
}

__all__ = [
    "EmbedResult",
    "EncoderPatch",
    "Schedule",
    "TokenState",
    "apply",
    "reduce",
    "remove",
    "sentence_embeddings",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
