"""See what an unmodified Hugging Face model's attention layers see, without forking model code.

transformers dispatches every attention call through its ``AttentionInterface`` registry. We register
one extra implementation, ``"tokensift"``, that calls the observers attached to a module with the exact
query/key/value states and mask the model uses (after RoPE, q/k norms and cache update), then runs the
stock SDPA kernel. :func:`observe_attention` switches a model to it for the duration of a ``with``
block and always switches back, also when the block raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from tokensift.errors import ModelError

IMPLEMENTATION = "tokensift"

Observer = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None", dict], None]
"""``observer(module, query, key, value, mask, kwargs)``; shapes ``[B, H, q, D]``, ``[B, Hkv, T, D]``."""

_OBSERVERS: dict[int, list[Observer]] = {}


def _dispatch(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    for observer in _OBSERVERS.get(id(module), ()):
        observer(module, query, key, value, attention_mask, kwargs)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(IMPLEMENTATION, _dispatch)
AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)


def attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's self-attention modules in layer order (modules that carry a ``layer_idx``)."""
    found = [
        m
        for m in model.modules()
        if isinstance(getattr(m, "layer_idx", None), int)
        and hasattr(m, "config")
        and any(hasattr(m, p) for p in ("q_proj", "qkv_proj", "query"))
    ]
    if not found:
        raise ModelError(
            f"{type(model).__name__} has no attention modules tokensift can observe; supported are Hugging Face "
            "models whose attention layers dispatch through AttentionInterface (Llama, Mistral, Qwen2/3, Gemma-3, ...)"
        )
    return sorted(found, key=layer_index)


def layer_index(module: torch.nn.Module) -> int:
    """The decoder layer an attention module belongs to."""
    return int(getattr(module, "layer_idx"))  # noqa: B009 - attribute checked by attention_modules


@contextlib.contextmanager
def observe_attention(model: torch.nn.Module, observers: dict[int, Observer]) -> Iterator[None]:
    """Call ``observers[layer_idx]`` on every attention call of those layers inside the block.

    Attention runs through SDPA while observed (numerically the same as eager up to float rounding).
    """
    modules = {layer_index(m): m for m in attention_modules(model)}
    unknown = sorted(set(observers) - set(modules))
    if unknown:
        raise ModelError(f"layers {unknown} do not exist; the model has layers 0..{len(modules) - 1}")
    configs: dict[int, Any] = {id(m.config): m.config for m in model.modules() if hasattr(m, "config")}
    saved = {key: cfg._attn_implementation for key, cfg in configs.items()}
    try:
        for layer, observer in observers.items():
            _OBSERVERS.setdefault(id(modules[layer]), []).append(observer)
        for cfg in configs.values():
            cfg._attn_implementation = IMPLEMENTATION
        yield
    finally:
        for key, cfg in configs.items():
            cfg._attn_implementation = saved[key]
        for layer, observer in observers.items():
            registered = _OBSERVERS.get(id(modules[layer]), [])
            if observer in registered:
                registered.remove(observer)
            if not registered:
                _OBSERVERS.pop(id(modules[layer]), None)
