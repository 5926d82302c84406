"""Probe passes: feed extra tokens after a prefilled context and record what each layer's attention saw.

KVzip scores a context's KV pairs by how strongly a pass that repeats the context attends to them. A
probe runs over a batch-1 copy of one row's cache (left padding already cut off), at the positions right
after the row, through :func:`tokensift.hooks.observe_attention`; the row's own cache is not changed.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import DynamicCache

from tokensift.errors import MethodUnsupportedError
from tokensift.hooks import attention_modules, layer_index, observe_attention
from tokensift.kv.model import check_length

ProbeRows = dict[int, list[tuple[Tensor, Tensor]]]
"""Per layer, per probe pass: its query rows ``[1, H, m, D]`` and its own key rows ``[1, Hkv, m, D]``."""


@torch.no_grad()
def run_probes(
    model: torch.nn.Module, keys: dict[int, Tensor], values: dict[int, Tensor], inputs: list[list[int]]
) -> ProbeRows:
    """Run each of ``inputs`` after the context whose per-layer cache is ``keys``/``values`` (``[1, Hkv, T,
    D]``, every layer of the model) and return the probes' query and key rows per layer."""
    layers = sorted(keys)
    if layers != list(range(len(attention_modules(model)))):
        raise MethodUnsupportedError(
            "a probe pass needs the cache of every layer; models with sliding-window layers (Gemma-3) are not supported"
        )
    n = int(keys[layers[0]].shape[2])
    found: ProbeRows = {layer: [] for layer in layers}

    def record(module: torch.nn.Module, query: Tensor, key: Tensor, value: Tensor, mask: object, kwargs: dict) -> None:
        found[layer_index(module)].append((query, key[:, :, -query.shape[2] :]))

    device = keys[layers[0]].device
    for ids in inputs:
        check_length(model, n + len(ids))
        cache = DynamicCache()
        for layer in layers:
            cache.update(keys[layer], values[layer], layer)
        positions = torch.arange(n, n + len(ids), device=device)[None]
        with observe_attention(model, {layer: record for layer in layers}):
            model(
                torch.tensor([ids], device=device),
                past_key_values=cache,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
            )
    return found
