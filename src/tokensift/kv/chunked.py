"""Chunked prefill: a long context goes through the model a chunk at a time, compressed as it goes.

A one-pass prefill of T tokens holds the whole cache and activations (masks, attention scores on the
paths that materialise them, MLP states) that grow with T. Fed in chunks of C tokens, only C tokens' activations
exist at once. With a press that can score what the cache holds now (:func:`chunk_reason` says which),
:class:`ChunkedPolicy` compresses every full-attention layer back to its final budget after each chunk, so a
layer never holds more than ``budget + C`` tokens: the cache is bounded by the budget, not by the context
(the scheme of streaming compression during prefill, e.g. SnapKV's or StreamingLLM's chunked use in kvpress).

A press that needs the whole context at once (probe passes, hidden states, a budget shared across layers,
reducers) still gets the chunks — compression then waits for the last one, which sees every cached key
(:attr:`tokensift.kv.attach.Session.compress_at`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from torch import Tensor

from tokensift.kv.attach import LayerByLayer
from tokensift.kv.cache import RaggedLayer, tensor_bytes
from tokensift.kv.press import Press, ScorerPress
from tokensift.kv.view import LayerView, shift

if TYPE_CHECKING:
    from tokensift.kv.attach import Session


def spans(n: int, step: int, tail: int | None) -> list[tuple[int, int]]:
    """``(start, end)`` chunks of ``step`` tokens over ``n``, the last one at least ``tail`` long (the query rows a
    press reads after the last chunk; ``None``: all of them, so one chunk)."""
    last = 0 if tail is None else max(0, n - max(tail, n - (n - 1) // step * step))
    cuts = [*range(0, last, step), last]
    return [(a, b) for a, b in zip(cuts, [*cuts[1:], n], strict=True) if b > a]


def chunk_reason(press: Press) -> str | None:
    """Why ``press`` cannot compress chunk by chunk (None: it can)."""
    if not isinstance(press, ScorerPress):
        return f"{press.spec} is a composition (its budget is shared or spent across the whole context)"
    if press.model_wide:
        return f"{press.spec} shares one budget across layers and needs every layer's full cache"
    if press.needs_probe or press.needs_hidden:
        return f"{press.spec} scores from passes over the whole context"
    if press.rows_wanted is None:
        return f"{press.spec} reads the attention of every query row of the prefill"
    return None


@dataclass
class ChunkedPolicy(LayerByLayer):
    """Compress each full-attention layer to ``keep`` tokens per head after every prefill chunk.

    ``peak_bytes`` records per layer the most bytes the layer held (right before a compression), ``seconds``
    the scoring time spent on it.
    """

    press: ScorerPress
    keep: int
    peak_bytes: dict[int, int] = field(default_factory=dict)
    seconds: dict[int, float] = field(default_factory=dict)

    def prefill(self, views: list[LayerView], keys: Tensor, values: Tensor, starts: list[int]) -> RaggedLayer:
        """The first chunk: keep its best ``keep`` tokens per head (all of them when the chunk is smaller)."""
        started = time.perf_counter()
        selection = [
            shift(self.press.select(view, self.press.score(view), min(self.keep, view.n)), start)
            for view, start in zip(views, starts, strict=True)
        ]
        layer = views[0].layer
        self.peak_bytes[layer] = max(self.peak_bytes.get(layer, 0), tensor_bytes(keys) + tensor_bytes(values))
        self.seconds[layer] = self.seconds.get(layer, 0.0) + time.perf_counter() - started
        return RaggedLayer.from_selection(keys, values, selection)

    def after_chunk(self, session: Session, idx: int, layer: RaggedLayer, query: Tensor, scaling: float) -> None:
        """After a later chunk was attended: score what the layer holds now and keep ``keep`` tokens per head."""
        self.peak_bytes[idx] = max(self.peak_bytes.get(idx, 0), layer.nbytes())
        if layer.get_seq_length() <= self.keep:
            return
        started = time.perf_counter()
        rows = self.press.rows_wanted
        view = LayerView(
            layer=idx,
            n_layers=len(session.modules),
            row=0,
            queries=query[:1, :, max(0, query.shape[2] - rows) :] if rows is not None else query[:1],
            keys=layer.keys,  # every head keeps the same count, so the layer is dense: [1, Hkv, L, D]
            values=layer.values,
            scaling=scaling,
            inv_freq=session.inv_freq.get(session.layer_types[idx]),
        )
        layer.keep([self.press.select(view, self.press.score(view), self.keep)])
        self.seconds[idx] = self.seconds.get(idx, 0.0) + time.perf_counter() - started
