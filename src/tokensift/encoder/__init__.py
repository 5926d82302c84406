"""Token merging and pruning inside Hugging Face encoders (BERT family, ViT, CLIP vision).

``with tokensift.encoder.reduce(model, "tome", ratio=0.5) as patch: ...`` reduces tokens layer by layer
in an unmodified model; :func:`sentence_embeddings` gives sentence-transformers-compatible embeddings
(mean pooling weighted by token sizes, L2-normalised). Methods live in :mod:`tokensift.encoder.methods`
and are registered in :mod:`tokensift.methods` under target ``"encoder"``.

Attributes are imported on first use: importing this package (as the method registry does) loads
neither transformers nor the patch. Every method class is exported under its class name.
"""

from __future__ import annotations

from tokensift.face import lazy_face

_FACE = {
    "EncoderPatch": "tokensift.encoder.patch",
    "TokenState": "tokensift.encoder.patch",
    "apply": "tokensift.encoder.patch",
    "reduce": "tokensift.encoder.patch",
    "remove": "tokensift.encoder.patch",
    "Schedule": "tokensift.encoder.schedule",
    "EmbedResult": "tokensift.encoder.embed",
    "sentence_embeddings": "tokensift.encoder.embed",
    "EncoderMethod": "tokensift.encoder.methods.base",
}

__getattr__, __dir__ = lazy_face(__name__, "encoder", _FACE)
