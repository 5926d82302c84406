"""What the KV adapter needs to know of a causal LM: whether it is supported, its positions, its rotary frequencies."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tokensift.errors import ContextTooLongError, UnsupportedArchitectureError

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3", "gemma3_text")
"""``config.model_type`` values the adapter is tested on (Gemma-3 multimodal checkpoints: their text model)."""


def text_config(model: torch.nn.Module) -> Any:
    """The config of the language model (a multimodal checkpoint's ``text_config``)."""
    return getattr(model.config, "text_config", None) or model.config


def check_supported(model: torch.nn.Module) -> None:
    """Raise :class:`UnsupportedArchitectureError` for a model the adapter is not built for."""
    kind = getattr(text_config(model), "model_type", None)
    if kind not in SUPPORTED:
        raise UnsupportedArchitectureError(
            f"KV compression does not support model type {kind!r}; supported: {', '.join(SUPPORTED)}"
        )


def check_length(model: torch.nn.Module, n: int) -> None:
    """Raise :class:`ContextTooLongError` when ``n`` tokens exceed the model's positions."""
    limit = getattr(text_config(model), "max_position_embeddings", None)
    if limit and n > limit:
        raise ContextTooLongError(f"{n} tokens exceed the model's {limit} positions")


def inv_freq(model: torch.nn.Module, layer_type: str | None) -> Tensor | None:
    """The rotary frequencies a layer uses (per layer type on Gemma-3), or None without rotary embeddings."""
    for module in model.modules():
        for name in (f"{layer_type}_inv_freq", "inv_freq"):
            found = getattr(module, name, None)
            if isinstance(found, Tensor):
                return found
    return None
