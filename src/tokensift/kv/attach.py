"""Attach KV compression to an unmodified Hugging Face causal LM.

``with compress(model, method="snapkv", ratio=0.5): model.generate(...)`` switches the model's attention
to the ``tokensift_kv`` implementation (registered in transformers' ``AttentionInterface``) for the block
and always switches back, also when the block raises. That implementation

* runs SDPA as usual while a layer's cache is an ordinary transformers layer;
* right after a prefill (the layer's cache was empty), hands each batch row's exact query/key/value
  states to the press and replaces the layer's cache by a :class:`~tokensift.kv.cache.RaggedLayer`
  holding only the kept positions (left padding is cut off first, so a row is compressed exactly as if
  it ran alone);
* attends over a ragged layer per head (:meth:`RaggedLayer.attend`).

Prefill compression does not change the hidden states of the forward that fills the cache, only what
later tokens can see, as in kvpress. Sliding-window layers (Gemma-3 local layers) are left alone: their
cache is already bounded by the window, and evicting inside a window would break its mask.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor
from transformers import AttentionInterface
from transformers.cache_utils import CacheLayerMixin
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from tokensift.errors import ContextTooLongError, MethodUnsupportedError, UnsupportedArchitectureError
from tokensift.hooks import attention_modules, layer_index
from tokensift.kv.cache import _ATTACHED, MaskedLayer, RaggedLayer, tensor_bytes
from tokensift.kv.press import LayerView, Press, Selection

IMPLEMENTATION = "tokensift_kv"
SUPPORTED = ("llama", "mistral", "qwen2", "qwen3", "gemma3_text")
"""``config.model_type`` values the adapter is tested on (Gemma-3 multimodal checkpoints: their text model)."""

_SESSIONS: dict[int, Session] = {}


def _dispatch(
    module: torch.nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None, **kwargs: Any
) -> tuple[Tensor, None]:
    session = _SESSIONS.get(id(module))
    if session is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    return session.attention(module, query, key, value, attention_mask, kwargs)


AttentionInterface.register(IMPLEMENTATION, _dispatch)
AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)


class Policy(Protocol):
    """What to do with a layer's cache right after prefill (prefill compression or a decoding bound)."""

    press: Press

    def prefill(
        self, views: list[LayerView], keys: Tensor, values: Tensor, starts: list[int]
    ) -> CacheLayerMixin | None:
        """The layer's new cache, or None to leave it as it is."""
        ...


@dataclass
class LayerRecord:
    """Accounting for one compressed layer."""

    layer: int
    tokens_before: list[int]
    kept: list[list[int]]
    bytes_before: int
    bytes_after: int
    seconds: float


@dataclass
class CompressionStats:
    """Real bytes before/after (from tensor storage), tokens kept per layer and head, scoring time."""

    layers: list[LayerRecord] = field(default_factory=list)

    @property
    def bytes_before(self) -> int:
        return sum(r.bytes_before for r in self.layers)

    @property
    def bytes_after(self) -> int:
        return sum(r.bytes_after for r in self.layers)

    @property
    def scoring_seconds(self) -> float:
        return sum(r.seconds for r in self.layers)

    @property
    def kept_fraction(self) -> float:
        return self.bytes_after / self.bytes_before if self.bytes_before else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "compressed_layers": len(self.layers),
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
            "kept_fraction": self.kept_fraction,
            "scoring_seconds": self.scoring_seconds,
            "tokens_kept": {r.layer: r.kept for r in self.layers},
        }


def _row_starts(mask: Tensor | None, batch: int, n: int) -> list[int]:
    """First real (non-padding) position of each row, read from the last row of the model's mask."""
    if mask is None:
        return [0] * batch
    last = mask[:, 0, -1, :n]
    allowed = last if last.dtype == torch.bool else torch.isfinite(last) & (last == 0)
    allowed = allowed.expand(batch, -1)
    return [int(row.float().argmax()) if bool(row.any()) else n for row in allowed]


def _inv_freq(model: torch.nn.Module, layer_type: str | None) -> Tensor | None:
    """The rotary frequencies a layer uses (per layer type on Gemma-3), or None without rotary embeddings."""
    for module in model.modules():
        for name in (f"{layer_type}_inv_freq", "inv_freq"):
            found = getattr(module, name, None)
            if isinstance(found, Tensor):
                return found
    return None


def _text_config(model: torch.nn.Module) -> Any:
    return getattr(model.config, "text_config", None) or model.config


def check_supported(model: torch.nn.Module) -> None:
    """Raise :class:`UnsupportedArchitectureError` for a model the adapter is not built for."""
    kind = getattr(_text_config(model), "model_type", None)
    if kind not in SUPPORTED:
        raise UnsupportedArchitectureError(
            f"KV compression does not support model type {kind!r}; supported: {', '.join(SUPPORTED)}"
        )


def check_length(model: torch.nn.Module, n: int) -> None:
    """Raise :class:`ContextTooLongError` when ``n`` tokens exceed the model's positions."""
    limit = getattr(_text_config(model), "max_position_embeddings", None)
    if limit and n > limit:
        raise ContextTooLongError(f"{n} tokens exceed the model's {limit} positions")


class Session:
    """The state of one attached block: which layers compress, the caches seen, the accounting."""

    def __init__(self, model: torch.nn.Module, policy: Policy) -> None:
        self.model = model
        self.policy = policy
        self.modules = attention_modules(model)
        config = _text_config(model)
        types = getattr(config, "layer_types", None) or ["full_attention"] * len(self.modules)
        self.compressible = {layer_index(m) for m in self.modules if types[layer_index(m)] == "full_attention"}
        self.inv_freq = {t: _inv_freq(model, t) for t in set(types)}
        self.layer_types = types
        self.caches: dict[int, Any] = {}
        self.stats = CompressionStats()
        self.compress_prefill = True
        self.pending: dict[int, tuple[Any, list[LayerView], Tensor, Tensor, list[int]]] = {}
        """Layers whose compression waits for the press's probe passes (see :meth:`after_forward`)."""

    def record_cache(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        self.caches[id(module)] = kwargs.get("past_key_values")

    def attention(
        self, module: torch.nn.Module, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None, kwargs: dict
    ) -> tuple[Tensor, None]:
        idx = layer_index(module)
        cache = self.caches.get(id(module))
        layer = cache.layers[idx] if cache is not None and idx < len(getattr(cache, "layers", [])) else None
        scaling = kwargs.get("scaling") or float(query.shape[-1]) ** -0.5
        if isinstance(layer, MaskedLayer):
            return layer.attend(query, scaling)
        if isinstance(layer, RaggedLayer):
            tracks = hasattr(layer, "observe")
            output, weights = layer.attend(query, scaling, need_weights=tracks)
            if tracks:
                layer.observe(weights)  # type: ignore[attr-defined]
            return output, None
        output, _ = sdpa_attention_forward(module, query, key, value, mask, **kwargs)
        fresh = key.shape[2] == query.shape[2]
        if cache is not None and layer is not None and fresh and self.compress_prefill and idx in self.compressible:
            check_length(self.model, key.shape[2])
            replaced = self._compress(idx, query, key, value, mask, scaling)
            if replaced is not None:
                cache.layers[idx] = replaced
        return output, None

    def _compress(
        self, idx: int, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None, scaling: float
    ) -> CacheLayerMixin | None:
        press = self.policy.press
        started = time.perf_counter()
        if press.needs_probe and not press.active:
            return None
        batch, n = key.shape[0], key.shape[2]
        starts = _row_starts(mask, batch, n)
        rows = press.query_rows
        views = []
        for b, start in enumerate(starts):
            first_query = start if rows is None else max(start, n - rows)
            views.append(
                LayerView(
                    layer=idx,
                    n_layers=len(self.modules),
                    row=b,
                    queries=query[b : b + 1, :, first_query:],
                    keys=key[b : b + 1, :, start:],
                    values=value[b : b + 1, :, start:],
                    scaling=scaling,
                    inv_freq=self.inv_freq.get(self.layer_types[idx]),
                )
            )
        if press.needs_probe:
            self.pending[idx] = (self.caches[id(self.modules[idx])], views, key, value, starts)
            return None
        replaced = self.policy.prefill(views, key, value, starts)
        if replaced is not None:
            self._record(idx, key, value, starts, replaced, time.perf_counter() - started)
        return replaced

    def _record(
        self, idx: int, key: Tensor, value: Tensor, starts: list[int], replaced: CacheLayerMixin, seconds: float
    ) -> None:
        self.stats.layers.append(
            LayerRecord(
                layer=idx,
                tokens_before=[key.shape[2] - s for s in starts],
                kept=replaced.lengths().tolist() if isinstance(replaced, RaggedLayer) else [],
                bytes_before=tensor_bytes(key) + tensor_bytes(value),
                bytes_after=replaced.nbytes() if isinstance(replaced, RaggedLayer) else 0,
                seconds=seconds,
            )
        )

    def after_forward(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        """After a prefill whose press needs probe passes: run them per row, then compress every layer."""
        if not self.pending:
            return
        pending, self.pending = self.pending, {}
        ids = kwargs.get("input_ids", args[0] if args else None)
        if not isinstance(ids, Tensor):
            raise MethodUnsupportedError(f"{self.policy.press.name} needs the prefill's input_ids (not inputs_embeds)")
        from tokensift.kv.probe import probe_views

        started = time.perf_counter()
        press = self.policy.press
        layers = sorted(pending)
        starts = pending[layers[0]][4]
        chosen: list[dict[int, Selection]] = []
        for b, start in enumerate(starts):
            views = {layer: pending[layer][1][b] for layer in layers}
            probe_views(self.model, press, views, ids[b, start:].tolist())
            picked = press.select_layers(views, {layer: press.score(view) for layer, view in views.items()})
            chosen.append({layer: [kept + start for kept in heads] for layer, heads in picked.items()})
        seconds = (time.perf_counter() - started) / len(layers)
        for layer in layers:
            cache, _, key, value, _ = pending[layer]
            replaced = RaggedLayer.from_selection(key, value, [row[layer] for row in chosen])
            cache.layers[layer] = replaced
            self._record(layer, key, value, starts, replaced, seconds)


@dataclass
class PrefillPolicy:
    """Compress each layer once, right after prefill, with ``press``."""

    press: Press

    def prefill(self, views: list[LayerView], keys: Tensor, values: Tensor, starts: list[int]) -> RaggedLayer | None:
        if not self.press.active:
            return None
        selection = [
            [idx + start for idx in self.press.compress(view)] for view, start in zip(views, starts, strict=True)
        ]
        return RaggedLayer.from_selection(keys, values, selection)


@contextlib.contextmanager
def attached(model: torch.nn.Module, policy: Policy) -> Iterator[Session]:
    """Route ``model``'s attention through ``policy`` inside the block; hooks always removed afterwards."""
    check_supported(model)
    session = Session(model, policy)
    configs: dict[int, Any] = {id(m.config): m.config for m in model.modules() if hasattr(m, "config")}
    saved = {key: cfg._attn_implementation for key, cfg in configs.items()}
    handles = []
    try:
        for module in session.modules:
            _SESSIONS[id(module)] = session
            handles.append(module.register_forward_pre_hook(session.record_cache, with_kwargs=True))
        handles.append(model.register_forward_hook(session.after_forward, with_kwargs=True))
        for cfg in configs.values():
            cfg._attn_implementation = IMPLEMENTATION
        _ATTACHED[0] += 1
        yield session
    finally:
        _ATTACHED[0] -= 1
        for key, cfg in configs.items():
            cfg._attn_implementation = saved[key]
        for handle in handles:
            handle.remove()
        for module in session.modules:
            if _SESSIONS.get(id(module)) is session:
                del _SESSIONS[id(module)]


def build_press(
    method: str, *, ratio: float = 0.0, keep_tokens: int | None = None, tokenizer: Any = None, **options: Any
) -> Press:
    """The registered KV method ``method`` as a press with the paper's defaults overridden by ``options``.

    ``tokenizer`` reaches only presses that write probe prompts (KVzip); the others do not take one.
    """
    from tokensift.methods import get_method

    entry = get_method(method, "kv")
    assert entry.build is not None
    if tokenizer is not None and getattr(entry.build, "needs_probe", False):
        options = {**options, "tokenizer": tokenizer}
    return entry.build(ratio=ratio, keep_tokens=keep_tokens, **{**entry.defaults, **options})


@contextlib.contextmanager
def compress(
    model: torch.nn.Module,
    method: str | Press = "snapkv",
    *,
    ratio: float = 0.0,
    keep_tokens: int | None = None,
    tokenizer: Any = None,
    **options: Any,
) -> Iterator[Session]:
    """Compress every prefill inside the block with ``method`` (a registered name or a press).

    ``ratio`` is the fraction of tokens removed (kvpress's convention), ``keep_tokens`` an absolute budget
    instead; ``tokenizer`` is needed by presses that write a probe prompt (KVzip). The yielded
    :class:`Session` carries the accounting (``session.stats``).
    """
    press = (
        method
        if isinstance(method, Press)
        else build_press(method, ratio=ratio, keep_tokens=keep_tokens, tokenizer=tokenizer, **options)
    )
    with attached(model, PrefillPolicy(press)) as session:
        yield session
