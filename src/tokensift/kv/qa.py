"""Compress a context once, keep the question out of compression, answer several questions from it.

:func:`compress_context` prefills the context alone and compresses its cache (query-agnostic: the press
cannot see the question). :func:`answer` copies that cache, feeds the question at the positions right
after the context and decodes greedily; the compressed context is never changed, so the next question
starts from the same cache. For query-aware compression put the question inside the context.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from transformers import DynamicCache

from tokensift.errors import InputError, MethodUnsupportedError
from tokensift.inputs import whole_number
from tokensift.kv.attach import CompressionStats, LayerRecord, PrefillPolicy, attached
from tokensift.kv.cache import MaskedLayer, PositionWindowLayer, RaggedLayer, cache_bytes, compact
from tokensift.kv.chunked import ChunkedPolicy, chunk_reason, spans
from tokensift.kv.filter import ContextFilter, filtered_prefill
from tokensift.kv.model import check_ids, check_length
from tokensift.kv.press import Press, ScorerPress


@dataclass
class CompressedContext:
    """A context's compressed cache, the number of positions it took and how it was made."""

    cache: Any
    length: int
    stats: CompressionStats
    prefill_seconds: float
    last_logits: Tensor
    peak_cache_bytes: int = 0
    """Most bytes the compressed layers held during the prefill, summed over layers (before compression)."""


@dataclass
class Answer:
    """Generated ids (without the question) and the time per decoded token."""

    ids: Tensor
    decode_seconds_per_token: float
    question_seconds: float


def cache_rows(cache: Any) -> int:
    """Batch rows of a cache (1 for a layer holding no full-precision keys at all, as transformers' quantized
    cache after a prefill)."""
    shape = cache.layers[0].keys.shape
    return int(shape[0]) if len(shape) == 4 else 1


def copy_cache(cache: Any, batch: int = 1) -> Any:
    """An independent copy of a transformers cache (ragged layers included) for ``batch`` rows.

    A one-row cache is repeated to ``batch`` rows; a cache that already has ``batch`` rows is copied.
    """
    clone = copy.copy(cache)
    clone.layers = [
        layer.copy() if isinstance(layer, (RaggedLayer, MaskedLayer, PositionWindowLayer)) else copy.copy(layer)
        for layer in cache.layers
    ]
    rows = cache_rows(clone)
    if rows != batch:
        if rows != 1:
            raise InputError(f"a cache of {rows} rows cannot serve a batch of {batch}")
        for layer in clone.layers:
            layer.batch_repeat_interleave(batch)
    return clone


@torch.no_grad()
def compress_context(
    model: torch.nn.Module,
    context_ids: Tensor,
    press: Press,
    *,
    chunk_size: int | None = None,
    bounded: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> CompressedContext:
    """Prefill ``context_ids [1, T]`` and compress its cache with ``press``.

    With ``chunk_size`` the context goes through the model ``chunk_size`` tokens at a time (only one chunk's
    activations exist at once) and the press compresses after the last chunk, as after one pass — except a
    press that reads every query row or the hidden states of the whole context, which gets one pass. With
    ``bounded`` too, a press that can score what the cache holds now (:func:`tokensift.kv.chunked.chunk_reason`)
    compresses after every chunk, so the cache never exceeds its budget plus one chunk (later chunks see only
    the kept tokens). ``progress(done, total)`` is called after every chunk. Only the last logits are computed.
    """
    context_ids = check_ids(model, context_ids, "context_ids", rows=1)
    n = context_ids.shape[1]
    check_length(model, n)
    if chunk_size is not None:
        whole_number(chunk_size, "chunk_size", label="prefill chunk")
    if isinstance(press, ContextFilter):  # prefill reduction: the filter runs the prefill itself
        if bounded:
            raise MethodUnsupportedError(f"{press.name} filters the prefill itself; it has no bounded mode")
        done = filtered_prefill(model, context_ids, press, chunk_size=chunk_size, progress=progress)
        return CompressedContext(
            done.cache, done.length, done.stats, done.seconds, done.logits, peak_cache_bytes=done.stats.bytes_after
        )
    reason = chunk_reason(press)
    if bounded and reason is not None and press.active:
        raise MethodUnsupportedError(f"a bounded chunked prefill needs a press that scores chunk by chunk: {reason}")
    whole = press.active and (press.rows_wanted is None or press.scorer.needs_hidden)
    step = n if chunk_size is None or (whole and not bounded) else min(chunk_size, n)
    config: Any = model.config
    cache = DynamicCache(config=config)
    policy: PrefillPolicy | ChunkedPolicy | None = PrefillPolicy(press)
    if press.stage == "decode":  # a decoding policy: the prefill's cache stays whole
        policy, step = None, n if chunk_size is None else min(chunk_size, n)
    elif bounded and step < n and press.active:
        assert isinstance(press, ScorerPress)
        policy = ChunkedPolicy(press, press.budgeted.tokens(n))
    with attached(model, policy) as session:
        if step < n and isinstance(policy, PrefillPolicy):
            session.compress_at, session.context_ids = n, context_ids
        started = time.perf_counter()
        for start, end in spans(n, step, press.rows_wanted if isinstance(policy, PrefillPolicy) else 0):
            positions = torch.arange(start, end, device=context_ids.device)[None]
            logits = model(
                context_ids[:, start:end],
                past_key_values=cache,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
            ).logits[:, -1]
            if progress is not None:
                progress(end, n)
        seconds = time.perf_counter() - started
    compact(cache)
    if isinstance(policy, ChunkedPolicy):
        stats, peak = _chunked_stats(cache, policy, n), sum(policy.peak_bytes.values())
    else:  # the compressed layers held the whole context's cache before compression
        stats, peak = session.stats, session.stats.bytes_before
    if not stats.layers:  # nothing compressed: the cache as the prefill left it
        peak = cache_bytes(cache)
    return CompressedContext(cache, n, stats, seconds, logits, peak_cache_bytes=peak)


def _chunked_stats(cache: Any, policy: ChunkedPolicy, n: int) -> CompressionStats:
    """Accounting of a chunk-by-chunk compression: what the whole context's cache would have held, and the
    layer as it is now."""
    stats = CompressionStats()
    for idx in sorted(policy.seconds):
        layer = cache.layers[idx]
        per_token = 2 * layer.keys.shape[1] * layer.keys.shape[-1] * layer.keys.element_size()
        stats.layers.append(
            LayerRecord(
                layer=idx,
                tokens_before=[n],
                kept=layer.kept_lengths().tolist(),
                bytes_before=per_token * n,
                bytes_after=layer.nbytes(),
                seconds=policy.seconds[idx],
            )
        )
    return stats


@torch.no_grad()
def continue_from(model: torch.nn.Module, context: CompressedContext, ids: Tensor, cache: Any | None = None) -> Tensor:
    """Logits ``[B, q, V]`` of ``ids [B, q]`` read after the compressed context (its cache is copied unless given)."""
    cache = copy_cache(context.cache, ids.shape[0]) if cache is None else cache
    positions = (context.length + torch.arange(ids.shape[1], device=ids.device))[None].expand(ids.shape[0], -1)
    with attached(model, None):
        return model(ids, past_key_values=cache, position_ids=positions, use_cache=True).logits


@torch.no_grad()
def answer(
    model: torch.nn.Module,
    context: CompressedContext,
    question_ids: Tensor,
    *,
    max_new_tokens: int = 32,
    stop_ids: set[int] | None = None,
    decode: Press | None = None,
) -> Answer:
    """Greedy answer to ``question_ids [B, q]`` (rows share the context) from a copy of the context's cache.

    ``decode``: a decoding policy (a press whose ``stage`` is ``decode``, :mod:`tokensift.kv.sparse`) that
    chooses which cached tokens each decoding step attends."""
    question_ids = check_ids(model, question_ids, "question_ids")
    whole_number(max_new_tokens, "max_new_tokens")
    check_length(model, context.length + question_ids.shape[1] + max_new_tokens)
    batch = question_ids.shape[0]
    cache = copy_cache(context.cache, batch)
    started = time.perf_counter()
    logits = continue_from(model, context, question_ids, cache)[:, -1]
    question_seconds = time.perf_counter() - started
    position = context.length + question_ids.shape[1]
    produced: list[Tensor] = []
    done = torch.zeros(batch, dtype=torch.bool)  # on the CPU: read once per step
    policy = None
    if decode is not None and decode.stage == "decode":
        from tokensift.kv.decode import DecodePolicy
        from tokensift.kv.sparse import SparseDecode

        assert isinstance(decode, SparseDecode)
        policy = DecodePolicy(decode)
    started = time.perf_counter()
    with attached(model, policy) as session:
        session.compress_prefill = False
        for step in range(max_new_tokens):
            token = logits.argmax(-1)
            produced.append(token)
            done |= torch.tensor([int(t) in (stop_ids or set()) for t in token.tolist()])
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            positions = torch.full((batch, 1), position + step, device=token.device)
            logits = model(token[:, None], past_key_values=cache, position_ids=positions, use_cache=True).logits[:, -1]
    steps = max(1, len(produced) - 1)
    ids = torch.stack(produced, dim=1) if produced else question_ids.new_empty(batch, 0)
    return Answer(ids, (time.perf_counter() - started) / steps, question_seconds)
