"""KV sessions: compression attached to an unmodified Hugging Face causal LM through the attention router.

:func:`attached` puts a :class:`Session` on every attention module with :class:`tokensift.hooks.Route`
for the block and always takes it off, also when the block raises. The session

* lets SDPA run as usual while a layer's cache is an ordinary transformers layer;
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
from transformers.cache_utils import CacheLayerMixin

from tokensift.errors import MethodUnsupportedError
from tokensift.hooks import AttentionCall, Route, attention_modules, layer_index
from tokensift.kv.batch import BatchLayer
from tokensift.kv.cache import _ATTACHED, MaskedLayer, PositionWindowLayer, RaggedLayer, tensor_bytes
from tokensift.kv.model import check_length, check_supported, inv_freq, layer_types
from tokensift.kv.probe import pass_dtype, reconstruction_probes, run_probes
from tokensift.kv.view import LayerView, PressLike, Selection, allowed_keys, shift
from tokensift.scores.attention import attention_with_lse


class Policy(Protocol):
    """What to do with a layer's cache right after prefill (prefill compression, a decoding bound, a recorder)."""

    @property
    def query_rows(self) -> int | None:
        """How many of the last query rows the policy reads (``None``: all)."""
        ...

    @property
    def needs_probe(self) -> bool:
        """Whether compression waits for probe passes run after the prefill (then :attr:`press` scores)."""
        ...

    @property
    def needs_hidden(self) -> bool:
        """Whether the views carry each layer's input hidden states (``LayerView.hidden``, for KVzap)."""
        ...

    @property
    def model_wide(self) -> bool:
        """Whether the press selects every layer together, so compression waits for the end of the forward."""
        ...

    @property
    def press(self) -> PressLike | None: ...

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
    allowed = allowed_keys(mask, n)
    if allowed is None:
        return [0] * batch
    allowed = allowed.expand(batch, -1)
    return [int(row.float().argmax()) if bool(row.any()) else n for row in allowed]


class Session:
    """The state of one attached block: which layers compress, the caches seen, the accounting."""

    def __init__(self, model: torch.nn.Module, policy: Policy | None) -> None:
        self.model = model
        self.policy = policy
        self.modules = attention_modules(model)
        types = layer_types(model)
        self.compressible = {layer_index(m) for m in self.modules if types[layer_index(m)] == "full_attention"}
        self.inv_freq = {t: inv_freq(model, t) for t in set(types)}
        self.layer_types = types
        self.caches: dict[int, Any] = {}
        self.hidden: dict[int, Tensor] = {}
        """Per attention module, its input hidden states of the current forward (only for a policy that reads them)."""
        self.stats = CompressionStats()
        self.compress_prefill = policy is not None
        self.pending: dict[int, tuple[Any, list[LayerView], Tensor, Tensor, list[int]]] = {}
        """Layers whose compression waits for the press's probe passes (see :meth:`after_forward`)."""
        self.compress_at: int | None = None
        """Cache length at which a layer is compressed: None for a fresh cache filled by one prefill; the context's
        length when the prefill comes in chunks and compression waits for the last one."""
        self.context_ids: Tensor | None = None
        """The whole context ``[B, T]`` when the prefill comes in chunks (probe passes read it)."""

    def route(self) -> Route:
        """The session as handlers on the router, with the hooks that record caches and run probe passes."""
        route = Route(self.model, {module: self.attention for module in self.modules})
        for module in self.modules:
            route.hook(module, self.record_cache, pre=True)
        route.hook(self.model, self.after_forward)
        return route

    def record_cache(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        self.caches[id(module)] = kwargs.get("past_key_values")
        if self.policy is not None and self.policy.needs_hidden and layer_index(module) in self.compressible:
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            if isinstance(hidden, Tensor):
                self.hidden[id(module)] = hidden

    def attention(self, call: AttentionCall) -> tuple[Tensor, None] | None:
        """Attend over a compressed layer; right after a prefill, compress the layer (SDPA then runs as usual)."""
        module, query, key = call.module, call.query, call.key
        idx = layer_index(module)
        cache = self.caches.get(id(module))
        layer = cache.layers[idx] if cache is not None and idx < len(getattr(cache, "layers", [])) else None
        if isinstance(layer, MaskedLayer | BatchLayer | PositionWindowLayer):
            return layer.attend(query, call.scaling)
        if isinstance(layer, RaggedLayer):
            tracks = hasattr(layer, "observe")
            output, weights = layer.attend(query, call.scaling, need_weights=tracks)
            if tracks:
                layer.observe(weights)  # type: ignore[attr-defined]
            after_chunk = getattr(self.policy, "after_chunk", None)
            if after_chunk is not None and query.shape[2] > 1 and idx in self.compressible:
                after_chunk(self, idx, layer, query, call.scaling)
            return output, None
        decode = getattr(self.policy, "decode", None)
        if decode is not None and query.shape[2] == 1 and layer is not None and idx in self.compressible:
            answered: tuple[Tensor, None] | None = decode(self, idx, call)
            return answered
        due = key.shape[2] == (query.shape[2] if self.compress_at is None else self.compress_at)
        if cache is not None and layer is not None and due and self.compress_prefill and idx in self.compressible:
            check_length(self.model, key.shape[2])
            replaced = self._compress(idx, call)
            if replaced is not None:
                cache.layers[idx] = replaced
        return _chunk_attention(call) if self._chunk_call(idx, call, layer) else None

    def _chunk_call(self, idx: int, call: AttentionCall, layer: Any) -> bool:
        """Whether this is a later prefill chunk of one unpadded row at a full-attention layer: its queries sit at
        the end of the keys, which SDPA can only express with a mask (the kernel's slow, memory-hungry path)."""
        query, key = call.query, call.key
        if layer is None or idx not in self.compressible or query.shape[0] != 1:
            return False
        if not 1 < query.shape[2] < key.shape[2]:
            return False
        return _row_starts(call.mask, 1, key.shape[2])[0] == 0

    def _compress(self, idx: int, call: AttentionCall) -> CacheLayerMixin | None:
        policy = self.policy
        assert policy is not None
        started = time.perf_counter()
        query, key, value = call.query, call.key, call.value
        batch, n = key.shape[0], key.shape[2]
        starts = _row_starts(call.mask, batch, n)
        rows = policy.query_rows
        hidden = self.hidden.pop(id(call.module), None)
        offset = n - query.shape[2]  # the cached positions before this forward's queries (the last chunk's)
        if hidden is not None and hidden.shape[1] != n:
            raise MethodUnsupportedError(
                f"{policy.press.name if policy.press else 'this method'} reads the hidden "
                "states of the whole context: prefill it in one pass"
            )
        views = []
        for b, start in enumerate(starts):
            first_query = start if rows is None else max(start, n - rows)
            views.append(
                LayerView(
                    layer=idx,
                    n_layers=len(self.modules),
                    row=b,
                    queries=query[b : b + 1, :, max(0, first_query - offset) :],
                    keys=key[b : b + 1, :, start:],
                    values=value[b : b + 1, :, start:],
                    scaling=call.scaling,
                    inv_freq=self.inv_freq.get(self.layer_types[idx]),
                    hidden=None if hidden is None else hidden[b : b + 1, start:],
                )
            )
        if policy.needs_probe or policy.model_wide:
            if not policy.needs_probe and policy.press is not None:  # score now; keep scores, not hidden states
                for view in views:
                    view.early_score = policy.press.score(view)
                    view.hidden = None
            self.pending[idx] = (self.caches[id(self.modules[idx])], views, key, value, starts)
            return None
        replaced = policy.prefill(views, key, value, starts)
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
                kept=replaced.kept_lengths().tolist() if isinstance(replaced, RaggedLayer) else [],
                bytes_before=tensor_bytes(key) + tensor_bytes(value),
                bytes_after=replaced.nbytes() if isinstance(replaced, RaggedLayer) else 0,
                seconds=seconds,
            )
        )

    def after_forward(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        """After a prefill whose press selects all layers together: run its probe passes per row (if it needs
        them), then compress every layer with the model-wide selection."""
        if not self.pending:
            return
        pending, self.pending = self.pending, {}
        press = self.policy.press if self.policy is not None else None
        assert press is not None, "a policy that waits for the whole forward scores with its press"
        probing = press.scorer.needs_probe
        ids = self.context_ids if self.context_ids is not None else kwargs.get("input_ids", args[0] if args else None)
        if probing and not isinstance(ids, Tensor):
            raise MethodUnsupportedError(f"{press.name} needs the prefill's input_ids (not inputs_embeds)")
        started = time.perf_counter()
        layers = sorted(pending)
        starts = pending[layers[0]][4]
        chosen: list[dict[int, Selection]] = []
        for b, start in enumerate(starts):
            views = {layer: pending[layer][1][b] for layer in layers}
            if probing:
                assert isinstance(ids, Tensor)
                base = pending[layers[0]][0] if len(starts) == 1 else None  # sliding windows: a batch-1 cache
                probe_views(self.model, press, views, ids[b, start:].tolist(), base)
            scores = {layer: press.score(v) if v.early_score is None else v.early_score for layer, v in views.items()}
            picked = press.select_layers(views, scores)
            chosen.append({layer: shift(heads, start) for layer, heads in picked.items()})
        seconds = (time.perf_counter() - started) / len(layers)
        for layer in layers:
            cache, views_of, key, value, _ = pending[layer]
            replaced = press.build(key, value, [row[layer] for row in chosen], views_of, starts)
            cache.layers[layer] = replaced
            self._record(layer, key, value, starts, replaced, seconds)


def _chunk_attention(call: AttentionCall) -> tuple[Tensor, None]:
    """A chunk's attention over the cached keys and its own (causal): two unmasked fused calls merged by their
    log-sum-exps (:func:`tokensift.scores.attention_with_lse`), the same output as the masked call."""
    n = call.key.shape[2] - call.query.shape[2]
    out, _ = attention_with_lse(call.query[0], call.key[0], call.value[0], n, scaling=call.scaling)
    return out.transpose(0, 1)[None].contiguous(), None


def probe_views(
    model: torch.nn.Module, press: PressLike, views: dict[int, LayerView], ids: list[int], base: Any = None
) -> None:
    """Run ``press``'s probe passes after the context ``ids`` (one row; ``views`` hold its cache per layer)
    and hand every view its layer's probe rows, or the scores the passes formed (``scorer.scores_in_probe``).
    ``base``: the batch-1 cache of the prefill, whose sliding-window layers the passes continue."""
    keys = {layer: view.keys for layer, view in views.items()}
    values = {layer: view.values for layer, view in views.items()}
    inputs = press.scorer.probe_inputs(ids)
    dtype = pass_dtype(model, getattr(press.scorer, "pass_dtype", "model"))  # kvzip's option: the pass in bf16
    if press.scorer.scores_in_probe:
        scores = reconstruction_probes(model, keys, values, inputs, base, dtype)
        for layer, view in views.items():
            view.probe_scores = scores[layer]
        return
    probes = run_probes(model, keys, values, inputs, base, dtype)
    for layer, view in views.items():
        view.probes = probes[layer]


class LayerByLayer:
    """Base of the policies that act on each layer with ``self.press`` as its prefill ends: no probe passes, no
    hidden states, nothing waiting for the end of the forward."""

    press: Any

    @property
    def query_rows(self) -> int | None:
        return self.press.rows_wanted

    @property
    def needs_probe(self) -> bool:
        return False

    @property
    def needs_hidden(self) -> bool:
        return False

    @property
    def model_wide(self) -> bool:
        return False


@dataclass
class PrefillPolicy:
    """Compress each layer once, right after prefill, with ``press``."""

    press: PressLike

    def __post_init__(self) -> None:
        stage = getattr(self.press, "stage", "cache")
        if stage != "cache":
            raise MethodUnsupportedError(
                f"{self.press.name} changes the {stage}, not the cache a prefill leaves: use "
                + (
                    "tokensift.kv.qa.compress_context (or `tokensift kv generate`)"
                    if stage == "prefill"
                    else "tokensift.kv.sparse_decoding(model, ...) around generate, or answer(..., decode=press)"
                )
            )

    @property
    def query_rows(self) -> int | None:
        return self.press.rows_wanted

    @property
    def needs_probe(self) -> bool:
        return self.press.scorer.needs_probe and self.press.active

    @property
    def needs_hidden(self) -> bool:
        return self.press.scorer.needs_hidden and self.press.active

    @property
    def model_wide(self) -> bool:
        return self.press.wide and self.press.active

    def prefill(self, views: list[LayerView], keys: Tensor, values: Tensor, starts: list[int]) -> RaggedLayer | None:
        if not self.press.active:
            return None
        selection = [shift(self.press.compress(view), start) for view, start in zip(views, starts, strict=True)]
        return self.press.build(keys, values, selection, views, starts)


@contextlib.contextmanager
def attached(model: torch.nn.Module, policy: Policy | None) -> Iterator[Session]:
    """Route ``model``'s attention through a :class:`Session` of ``policy`` inside the block; always detached.

    With ``policy=None`` nothing is compressed: the session only attends over caches compressed earlier.
    """
    check_supported(model)
    session = Session(model, policy)
    with session.route():
        _ATTACHED[0] += 1
        try:
            yield session
        finally:
            _ATTACHED[0] -= 1
