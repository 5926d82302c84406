"""What the KV adapter needs to know of a causal LM: whether it is supported, its positions, its rotary frequencies."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tokensift.errors import ContextTooLongError, InputError, UnsupportedArchitectureError

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3", "gemma3_text")
"""``config.model_type`` values the adapter is tested on (Gemma-3 multimodal checkpoints: their text model)."""


def text_config(model: torch.nn.Module) -> Any:
    """The config of the language model (a multimodal checkpoint's ``text_config``)."""
    return getattr(model.config, "text_config", None) or model.config


def layer_types(model: torch.nn.Module) -> list[str]:
    """Per decoder layer, its attention kind (``full_attention``, or Gemma-3's ``sliding_attention``)."""
    config = text_config(model)
    return list(getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers)


def layer_windows(model: torch.nn.Module) -> list[int | None]:
    """Per decoder layer, its sliding-window length (Gemma-3 local layers) or ``None`` for global attention."""
    window = getattr(text_config(model), "sliding_window", None)
    return [window if kind == "sliding_attention" else None for kind in layer_types(model)]


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


def check_ids(model: torch.nn.Module, ids: object, name: str, *, rows: int | None = None) -> Tensor:
    """``ids`` as a ``[batch, tokens]`` tensor of the model's token ids (at least one token; ``rows`` rows when
    given); :class:`InputError` naming ``name`` otherwise."""
    if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.dtype not in (torch.long, torch.int32, torch.int64):
        shape = tuple(ids.shape) if isinstance(ids, Tensor) else type(ids).__name__
        raise InputError(f"{name} must be a [batch, tokens] tensor of integer token ids, got {shape}")
    if ids.shape[1] == 0 or ids.shape[0] == 0:
        raise InputError(f"{name} holds no tokens (shape {tuple(ids.shape)})")
    if rows is not None and ids.shape[0] != rows:
        raise InputError(f"{name} must have {rows} row(s), got {ids.shape[0]}")
    vocab = getattr(text_config(model), "vocab_size", None)
    if int(ids.min()) < 0 or (vocab is not None and int(ids.max()) >= vocab):
        raise InputError(f"{name} has token ids outside the model's vocabulary (0..{vocab - 1 if vocab else '?'})")
    return ids.long()


def device_of(model: torch.nn.Module) -> torch.device:
    """Where the model's weights are (new tensors for it are made there)."""
    return next(model.parameters()).device
