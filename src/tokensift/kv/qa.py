"""Compress a context once, keep the question out of compression, answer several questions from it.

:func:`compress_context` prefills the context alone and compresses its cache (query-agnostic: the press
cannot see the question). :func:`answer` copies that cache, feeds the question at the positions right
after the context and decodes greedily; the compressed context is never changed, so the next question
starts from the same cache. For query-aware compression put the question inside the context.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from transformers import DynamicCache

from tokensift.errors import InputError
from tokensift.inputs import whole_number
from tokensift.kv.attach import CompressionStats, PrefillPolicy, attached
from tokensift.kv.cache import MaskedLayer, RaggedLayer
from tokensift.kv.model import check_ids, check_length
from tokensift.kv.press import Press


@dataclass
class CompressedContext:
    """A context's compressed cache, the number of positions it took and how it was made."""

    cache: Any
    length: int
    stats: CompressionStats
    prefill_seconds: float
    last_logits: Tensor


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
        layer.copy() if isinstance(layer, (RaggedLayer, MaskedLayer)) else copy.copy(layer) for layer in cache.layers
    ]
    rows = cache_rows(clone)
    if rows != batch:
        if rows != 1:
            raise InputError(f"a cache of {rows} rows cannot serve a batch of {batch}")
        for layer in clone.layers:
            layer.batch_repeat_interleave(batch)
    return clone


@torch.no_grad()
def compress_context(model: torch.nn.Module, context_ids: Tensor, press: Press) -> CompressedContext:
    """Prefill ``context_ids [1, T]`` and compress its cache with ``press``."""
    context_ids = check_ids(model, context_ids, "context_ids", rows=1)
    check_length(model, context_ids.shape[1])
    config: Any = model.config
    cache = DynamicCache(config=config)
    with attached(model, PrefillPolicy(press)) as session:
        started = time.perf_counter()
        logits = model(context_ids, past_key_values=cache, use_cache=True).logits[:, -1]
        seconds = time.perf_counter() - started
    return CompressedContext(cache, context_ids.shape[1], session.stats, seconds, logits)


@torch.no_grad()
def continue_from(model: torch.nn.Module, context: CompressedContext, ids: Tensor, cache: Any | None = None) -> Tensor:
    """Logits ``[B, q, V]`` of ``ids [B, q]`` read after the compressed context (its cache is copied unless given)."""
    cache = copy_cache(context.cache, ids.shape[0]) if cache is None else cache
    positions = (context.length + torch.arange(ids.shape[1]))[None].expand(ids.shape[0], -1)
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
) -> Answer:
    """Greedy answer to ``question_ids [B, q]`` (rows share the context) from a copy of the context's cache."""
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
    done = torch.zeros(batch, dtype=torch.bool)
    started = time.perf_counter()
    with attached(model, None):
        for step in range(max_new_tokens):
            token = logits.argmax(-1)
            produced.append(token)
            done |= torch.tensor([int(t) in (stop_ids or set()) for t in token])
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            positions = torch.full((batch, 1), position + step)
            logits = model(token[:, None], past_key_values=cache, position_ids=positions, use_cache=True).logits[:, -1]
    steps = max(1, len(produced) - 1)
    ids = torch.stack(produced, dim=1) if produced else question_ids.new_empty(batch, 0)
    return Answer(ids, (time.perf_counter() - started) / steps, question_seconds)
