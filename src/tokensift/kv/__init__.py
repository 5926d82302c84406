"""KV-cache compression for Hugging Face causal LMs (the ``kv`` target): the public face.

* ``with kv.compress(model, "snapkv", ratio=0.5): model.generate(...)`` — or ``with kv.SnapKV(ratio=0.5)(model):``
  — compresses the cache right after prefill; compositions by name (``"adakv:kvzip"``) or by object
  (``kv.AdaKV(press=kv.KVzip(ratio=0.75, tokenizer=tok))``);
* :func:`bounded` keeps the cache under a fixed size while decoding; :func:`sparse_decoding` keeps the whole
  cache but lets each decoding step attend only the tokens a policy picks (``tokenselect``, ``tidaldecode``);
* :func:`compress_context` with a prefill filter (``gemfilter``, ``promptdistill``) runs the later layers on the
  kept tokens only (:func:`filtered_prefill`), and with ``chunk_size`` prefills a long context chunk by chunk;
* :func:`compress_context` compresses a context once, :func:`answer` answers questions from it;
* :func:`dense_cache` turns a cache whose heads all keep the same number of tokens per layer (``kvcompose``) into
  an ordinary ``DynamicCache``, and :func:`generate_inputs` says what ``model.generate()`` needs to go on from it.

Every press class is exported under its class name (read from the method registry). Attributes load on
first use, so ``import tokensift.kv`` is cheap and the method registry can import this package's modules.
"""

from __future__ import annotations

from tokensift.face import lazy_face

_FACE = {
    "compress": "tokensift.kv.api",
    "press_from": "tokensift.kv.api",
    "bounded": "tokensift.kv.decode",
    "sparse_decoding": "tokensift.kv.decode",
    "filtered_prefill": "tokensift.kv.filter",
    "compress_context": "tokensift.kv.qa",
    "answer": "tokensift.kv.qa",
    "CompressedContext": "tokensift.kv.qa",
    "Answer": "tokensift.kv.qa",
    "Session": "tokensift.kv.attach",
    "CompressionStats": "tokensift.kv.attach",
    "Press": "tokensift.kv.press",
    "ScorerPress": "tokensift.kv.press",
    "Wrapper": "tokensift.kv.press",
    "LayerView": "tokensift.kv.view",
    "RaggedLayer": "tokensift.kv.cache",
    "cache_bytes": "tokensift.kv.cache",
    "dense_cache": "tokensift.kv.cache",
    "generate_inputs": "tokensift.kv.cache",
    "QuantizedLayer": "tokensift.kv.lowbits",
}

__getattr__, __dir__ = lazy_face(__name__, "kv", _FACE)
