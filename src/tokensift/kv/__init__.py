"""KV-cache compression for Hugging Face causal LMs (the ``kv`` target).

``with tokensift.kv.compress(model, method="snapkv", ratio=0.5): model.generate(...)`` compresses the
cache right after prefill; :func:`bounded` keeps it under a fixed size while decoding; :mod:`.qa`
compresses a context once and answers several questions from it. Submodules import transformers, so
they load on first use (the method registry imports only :mod:`tokensift.kv.press` and the methods).
"""

from __future__ import annotations

from typing import Any

__all__ = ["bounded", "build_press", "compress"]


def __getattr__(name: str) -> Any:
    if name in ("compress", "build_press"):
        from tokensift.kv import attach

        return getattr(attach, name)
    if name == "bounded":
        from tokensift.kv.decode import bounded

        return bounded
    raise AttributeError(name)
