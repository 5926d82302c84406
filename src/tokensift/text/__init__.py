"""Prompt compression (the ``text`` target): the public face.

``text.compress(prompt, keep=0.33, method="llmlingua")`` splits a prompt into whole-word units, scores them
with a small LM and keeps the best under an exact budget on a target tokenizer (``ratio`` removed, ``keep``
kept — ``rate`` is its LLMLingua name — or ``keep_tokens``). :class:`Compressor` scores once and compresses
to several budgets. Every method class is exported under its class name (read from the method registry).
Attributes load on first use, so the method registry can import this package's modules.
"""

from __future__ import annotations

from tokensift.face import lazy_face

_FACE = {
    "compress": "tokensift.text.api",
    "Compressor": "tokensift.text.api",
    "Compression": "tokensift.text.api",
    "Protect": "tokensift.text.units",
    "TextMethod": "tokensift.text.methods.base",
}

__getattr__, __dir__ = lazy_face(__name__, "text", _FACE)
