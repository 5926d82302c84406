"""Probe passes: feed extra tokens after a prefilled context and see what each layer's attention does.

KVzip scores a context's KV pairs by how strongly a pass that repeats the context attends to them. A
probe runs over a batch-1 copy of one row's cache (left padding already cut off), at the positions right
after the row; the row's own cache is not changed. :func:`run_probes` records each pass's query and key
rows through :func:`tokensift.hooks.observe_attention` (the scorer recomputes the weights afterwards);
:func:`reconstruction_probes` answers the pass's attention calls itself with
:func:`tokensift.scores.attend_and_reconstruct`, so the scores come out of the pass: the logits over the context
keys, formed once per chunk of rows, give both the pass's output and every key's weight, whose largest over the
rows is its score (nothing kept but ``[Hkv, T]`` per layer).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor
from transformers import DynamicCache

from tokensift.errors import MethodUnsupportedError
from tokensift.hooks import AttentionCall, Route, attention_modules, layer_index, layer_modules, observe_attention
from tokensift.kv.model import check_length
from tokensift.scores import attend_and_reconstruct

ProbeRows = dict[int, list[tuple[Tensor, Tensor]]]
"""Per layer, per probe pass: its query rows ``[1, H, m, D]`` and its own key rows ``[1, Hkv, m, D]``."""
ProbeScores = dict[int, list[Tensor]]
"""Per layer, per probe pass: the largest weight any probe row of each KV group gave each context key ``[Hkv, T]``."""


def fast_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware (a GPU that supports it; a CPU with AMX tiles
    or AVX512-BF16), so a bf16 pass is faster than a float32 one rather than emulated."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)
    return False


def pass_dtype(model: torch.nn.Module, precision: str) -> torch.dtype | None:
    """The autocast dtype of a repeat pass for the option ``precision`` (``model``: none; ``bfloat16``; ``auto``:
    bfloat16 for a float32 model on a device where :func:`fast_bf16`, else none)."""
    if precision == "model":
        return None
    if precision == "auto":
        weight = next(model.parameters())
        return torch.bfloat16 if weight.dtype == torch.float32 and fast_bf16(weight.device) else None
    return getattr(torch, precision)


@torch.no_grad()
def run_probes(
    model: torch.nn.Module,
    keys: dict[int, Tensor],
    values: dict[int, Tensor],
    inputs: list[list[int]],
    base: Any = None,
    dtype: torch.dtype | None = None,
) -> ProbeRows:
    """Run each of ``inputs`` after the context whose per-layer cache is ``keys``/``values`` (``[1, Hkv, T,
    D]``, every layer of the model) and return the probes' query and key rows per layer."""
    found: ProbeRows = {layer: [] for layer in sorted(keys)}

    def record(module: torch.nn.Module, query: Tensor, key: Tensor, value: Tensor, mask: object, kwargs: dict) -> None:
        found[layer_index(module)].append((query, key[:, :, -query.shape[2] :]))

    with observe_attention(model, dict.fromkeys(found, record)):
        _passes(model, keys, values, inputs, base, dtype)
    return found


@torch.no_grad()
def reconstruction_probes(
    model: torch.nn.Module,
    keys: dict[int, Tensor],
    values: dict[int, Tensor],
    inputs: list[list[int]],
    base: Any = None,
    dtype: torch.dtype | None = None,
) -> ProbeScores:
    """Run each of ``inputs`` after the context (as :func:`run_probes`), answering every attention call with
    :func:`~tokensift.scores.attend_and_reconstruct`: KVzip's scores per layer and pass, formed in the pass.
    ``dtype``: the passes' linear layers, their causal attention over their own keys and their products over the
    context keys in that precision (:func:`~tokensift.scores.attend_and_reconstruct`'s ``products``)."""
    found: ProbeScores = {layer: [] for layer in sorted(keys)}

    def answer(call: AttentionCall) -> tuple[Tensor, None]:
        m = call.query.shape[2]
        out, best = attend_and_reconstruct(
            call.query[0],
            call.key[0],
            call.value[0],
            call.key.shape[2] - m,
            scaling=call.scaling,
            products=dtype or torch.float32,
        )
        found[layer_index(call.module)].append(best)
        return out.transpose(0, 1)[None].contiguous(), None

    modules = layer_modules(model)
    with Route(model, {modules[layer]: answer for layer in found}):
        _passes(model, keys, values, inputs, base, dtype)
    return found


def _passes(
    model: torch.nn.Module,
    keys: dict[int, Tensor],
    values: dict[int, Tensor],
    inputs: list[list[int]],
    base: Any = None,
    dtype: torch.dtype | None = None,
) -> None:
    """Feed each of ``inputs`` after a batch-1 copy of the context cache, at the positions that follow it.

    ``dtype`` (e.g. ``torch.bfloat16``): the passes run under autocast to it (their linear layers and products in
    that precision; the cache they read is not converted).

    ``keys``/``values`` hold the layers being scored; the others (Gemma-3's sliding-window layers) come from
    ``base``, the batch-1 cache the prefill left: their windows go on sliding over the probe tokens in a copy,
    while only the full-attention layers are scored."""
    layers = sorted(keys)
    others = [i for i in range(len(attention_modules(model))) if i not in keys]
    if others and (base is None or any(not _windowed(base.layers[i]) for i in others)):
        raise MethodUnsupportedError(
            "a probe pass needs the cache of every layer: the full-attention layers' keys and values, the "
            "sliding-window layers' own windows (a batch-1 cache)"
        )
    n = int(keys[layers[0]].shape[2])
    device = keys[layers[0]].device
    for ids in inputs:
        check_length(model, n + len(ids))
        config: Any = model.config
        cache = DynamicCache(config=config) if others else DynamicCache()
        for layer in layers:
            cache.update(keys[layer], values[layer], layer)
        for layer in others:
            cache.layers[layer] = copy.copy(base.layers[layer])  # updates rebind its tensors: the base is untouched
        positions = torch.arange(n, n + len(ids), device=device)[None]
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            model(
                torch.tensor([ids], device=device),
                past_key_values=cache,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
            )


def _windowed(layer: Any) -> bool:
    """Whether a cache layer is a sliding-window one holding one row (its window is its own to keep)."""
    return (
        bool(getattr(layer, "is_sliding", False))
        and getattr(layer, "keys", None) is not None
        and (layer.keys.shape[0] == 1)
    )
