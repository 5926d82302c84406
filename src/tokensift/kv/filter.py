"""Prefill reduction: an early layer picks the context tokens, and the later layers only ever see those.

Eviction after a full prefill saves memory and decode time but not the prefill itself, which grows fastest
with the context. A :class:`ContextFilter` scores the context at one attention layer (``select_layer``) and
stops the forward right there, so layers past it never run over the whole context:

* ``rerun`` (GemFilter, arXiv:2409.17422): the whole model then runs again on the kept tokens alone,
  re-numbered ``0..k-1`` — a short prompt in every layer, whose cache is an ordinary transformers cache;
* otherwise (PromptDistill, arXiv:2503.23274): the hidden states the first pass computed after the selecting
  layer are kept for the selected tokens only and the remaining layers run on them, at their original
  positions; the first full-attention layers' caches are cut down to the same tokens. Sliding-window layers
  slide over positions, not entries (:class:`~tokensift.kv.cache.PositionWindowLayer`): the later ones over the
  kept tokens, the first ones keep the first pass's window of the whole context.

Both passes go chunk by chunk (``chunk_size``), so no activation ever spans the whole context. The
forward is stopped by an exception raised from the attention router or a forward pre-hook — no model code
is copied.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor
from transformers import DynamicCache
from transformers.cache_utils import DynamicSlidingWindowLayer

from tokensift.errors import ModelError, ParameterError
from tokensift.hooks import AttentionCall, Route, attention_modules, layer_modules
from tokensift.kv.attach import CompressionStats, LayerRecord, attached
from tokensift.kv.cache import PositionWindowLayer, compact
from tokensift.kv.chunked import spans
from tokensift.kv.model import check_ids, check_length, layer_types
from tokensift.kv.press import ScorerPress
from tokensift.kv.view import LayerView
from tokensift.registry import option

Progress = Callable[[int, int], None]


class _Stop(Exception):
    """Raised inside a forward to end it early (the layers after the selecting one are not needed)."""


@dataclass
class ContextFilter(ScorerPress):
    """A press that filters the context during prefill (``ratio``: the share of the context's tokens the later
    layers never see). Subclasses give :meth:`score` (one score per token, shared by every head) and
    :attr:`rerun`."""

    stage: ClassVar[str] = "prefill"
    rerun: ClassVar[bool] = True
    """True: run the whole model again on the kept tokens; False: continue from the selecting layer."""

    depth: ClassVar[float] = 0.4
    """Where the default selecting layer sits, as a share of the model's depth."""

    select_layer: int | None = option(None, low=0)
    """The attention layer whose scores select (default: the full-attention layer nearest ``depth``)."""

    def layer_for(self, model: torch.nn.Module) -> int:
        """The selecting layer: ``select_layer`` or the default, always a full-attention layer."""
        types = layer_types(model)
        full = [i for i, kind in enumerate(types) if kind == "full_attention"]
        if not self.rerun:
            full = [i for i in full if i < len(types) - 1]
        if not full:
            raise ParameterError(f"{self.name} needs a full-attention layer with layers after it to select at")
        if self.select_layer is None:
            return min(full, key=lambda i: (abs(i - self.depth * (len(types) - 1)), i))
        if not self.rerun and self.select_layer >= len(types) - 1:
            raise ParameterError(f"{self.name}: select_layer must leave later layers to run", option="select_layer")
        if self.select_layer not in full:
            raise ParameterError(
                f"{self.name}: select_layer {self.select_layer} is not a full-attention layer of this model "
                f"(those are {full}); a sliding-window layer cannot see the whole context",
                option="select_layer",
            )
        return self.select_layer

    def kept_positions(self, view: LayerView) -> Tensor:
        """Ascending positions of the kept context tokens (the budget and protected tokens as for any press)."""
        scores = self.score(view)
        return self.choose(scores, self.budgeted.tokens(view.n))[0]


def _config(model: torch.nn.Module) -> Any:
    return model.config


def decoder_layer(model: torch.nn.Module, idx: int) -> torch.nn.Module:
    """The decoder layer (norms, attention, MLP, residuals) that holds attention layer ``idx``."""
    attention = layer_modules(model, [idx])[idx]
    for module in model.modules():
        if any(child is attention for child in module.children()):
            return module
    raise ModelError(f"no decoder layer holds attention layer {idx}")


def _first_pass(
    model: torch.nn.Module, ids: Tensor, press: ContextFilter, layer: int, chunk: int | None, progress: Progress | None
) -> tuple[Tensor, DynamicCache, Tensor | None]:
    """Run the context up to ``layer`` (chunk by chunk); returns the kept positions, the cache of the layers
    before and including ``layer``, and (continuing filters) the hidden states entering ``layer + 1``."""
    n = ids.shape[1]
    modules = attention_modules(model)
    target = layer_modules(model, [layer])[layer]
    cache = DynamicCache(config=_config(model))
    kept: list[Tensor] = []
    hidden: list[Tensor] = []
    rows = press.rows_wanted

    def select(call: AttentionCall) -> tuple[Tensor, None] | None:
        if call.key.shape[2] < n:  # not the last chunk: the layers after this one are not needed yet
            if press.rerun:
                raise _Stop
            return None
        view = LayerView(
            layer=layer,
            n_layers=len(modules),
            row=0,
            queries=call.query if rows is None else call.query[:, :, max(0, call.query.shape[2] - rows) :],
            keys=call.key,
            values=call.value,
            scaling=call.scaling,
        )
        kept.append(press.kept_positions(view))
        if press.rerun:
            raise _Stop
        return None

    def capture(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        hidden.append(kwargs["hidden_states"] if "hidden_states" in kwargs else args[0])
        raise _Stop

    route = Route(model, {target: select})
    if not press.rerun:
        route.hook(decoder_layer(model, layer + 1), capture, pre=True)
    with route:
        for start, end in spans(n, chunk or n, 0):
            positions = torch.arange(start, end, device=ids.device)[None]
            with contextlib.suppress(_Stop):
                model(ids[:, start:end], past_key_values=cache, position_ids=positions, use_cache=True)
            if progress is not None:
                progress(end, n)
    return kept[0], cache, torch.cat(hidden, dim=1) if hidden else None


def _second_pass(
    model: torch.nn.Module,
    ids: Tensor,
    positions: Tensor,
    chunk: int | None,
    replace: tuple[int, Tensor] | None,
) -> tuple[DynamicCache, Tensor]:
    """Run ``ids`` at ``positions`` through the model; with ``replace = (layer, hidden)`` the input of decoder
    layer ``layer`` is swapped for the matching slice of ``hidden`` (the first pass's states), and the
    sliding-window layers slide over positions (:class:`PositionWindowLayer`), since the kept tokens are sparse."""
    cache = DynamicCache(config=_config(model))
    windowed = [] if replace is None else _position_windows(model, cache)
    span = [0, 0]

    def swap(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        assert replace is not None
        states = replace[1][:, span[0] : span[1]]
        if "hidden_states" in kwargs:
            return args, {**kwargs, "hidden_states": states}
        return (states, *args[1:]), kwargs

    route = Route(model, {})
    if replace is not None:
        route.hook(decoder_layer(model, replace[0]), swap, pre=True)
    logits = None
    with route, attached(model, None) if windowed else contextlib.nullcontext():
        for start, end in spans(ids.shape[1], chunk or ids.shape[1], 0):
            span[:] = [start, end]
            for layer in windowed:
                layer.expect(positions[start:end])
            logits = model(
                ids[:, start:end],
                past_key_values=cache,
                position_ids=positions[None, start:end],
                use_cache=True,
                logits_to_keep=1,
            ).logits[:, -1]
    assert logits is not None
    return cache, logits


@dataclass
class Filtered:
    """What a filtered prefill produced (see :class:`tokensift.kv.qa.CompressedContext`)."""

    cache: Any
    length: int
    stats: CompressionStats
    seconds: float
    logits: Tensor
    kept: Tensor


@torch.no_grad()
def filtered_prefill(
    model: torch.nn.Module,
    context_ids: Tensor,
    press: ContextFilter,
    *,
    chunk_size: int | None = None,
    progress: Progress | None = None,
) -> Filtered:
    """Prefill ``context_ids [1, T]`` through ``press``'s filter: the cache holds only the kept tokens.

    A re-running filter's context is re-numbered (``length`` = tokens kept: what follows is placed right after
    them); a continuing one keeps the original positions (``length`` = T).
    """
    context_ids = check_ids(model, context_ids, "context_ids", rows=1)
    n = context_ids.shape[1]
    check_length(model, n)
    layer = press.layer_for(model)
    started = time.perf_counter()
    kept, first, hidden = _first_pass(model, context_ids, press, layer, chunk_size, progress)
    kept = kept.to(context_ids.device)
    if press.rerun:
        positions = torch.arange(kept.numel(), device=context_ids.device)
        cache, logits = _second_pass(model, context_ids[:, kept], positions, chunk_size, None)
        length = int(kept.numel())
    else:
        assert hidden is not None
        cache, logits = _second_pass(model, context_ids[:, kept], kept, chunk_size, (layer + 1, hidden[:, kept]))
        types = layer_types(model)
        for i in range(layer + 1):  # the first layers: the first pass's cache (it saw the whole context)
            early: Any = first.layers[i]
            if types[i] == "full_attention":  # cut to the kept tokens
                early.keys, early.values = early.keys[:, :, kept], early.values[:, :, kept]
                cache.layers[i] = early
            else:  # a sliding window of the whole context: its last positions, exact
                stored = early.keys.shape[2]
                where = torch.arange(n - stored, n, device=context_ids.device)
                cache.layers[i] = PositionWindowLayer(
                    _window(model), early.keys, early.values, where, seen=int(kept.numel())
                )
        length = n
    seconds = time.perf_counter() - started
    compact(cache)
    return Filtered(cache, length, _stats(cache, n, kept.numel(), seconds), seconds, logits, kept)


def _window(model: torch.nn.Module) -> int:
    config: Any = _config(model)
    window = getattr(config.get_text_config(), "sliding_window", None)
    if not isinstance(window, int):
        raise ModelError(f"{type(model).__name__} has sliding-window layers but no sliding_window in its config")
    return window


def _position_windows(model: torch.nn.Module, cache: DynamicCache) -> list[PositionWindowLayer]:
    """Put a :class:`PositionWindowLayer` in place of every sliding-window layer of ``cache``; return them."""
    types = layer_types(model)
    if "sliding_attention" not in types:
        return []
    window = _window(model)
    windowed = []
    for i, kind in enumerate(types):
        if kind == "sliding_attention":
            layer = PositionWindowLayer(window)
            cache.layers[i] = layer
            windowed.append(layer)
    return windowed


def _stats(cache: Any, n: int, k: int, seconds: float) -> CompressionStats:
    """Per full-attention layer: the bytes the whole context's cache would have taken, and those it takes."""
    stats = CompressionStats()
    for i, layer in enumerate(cache.layers):
        if isinstance(layer, DynamicSlidingWindowLayer | PositionWindowLayer) or getattr(layer, "keys", None) is None:
            continue
        stored = layer.keys.nbytes + layer.values.nbytes
        heads = layer.keys.shape[1]
        stats.layers.append(
            LayerRecord(
                layer=i,
                tokens_before=[n],
                kept=[[k] * heads],
                bytes_before=stored * n // max(1, layer.keys.shape[2]),
                bytes_after=stored,
                seconds=seconds / len(cache.layers),
            )
        )
    return stats
