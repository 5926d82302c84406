"""Sentence embeddings the sentence-transformers way, optionally with tokens merged or pruned inside.

all-MiniLM-L6-v2's sentence embedding is the mean of the last hidden states over real tokens, then L2
normalisation (its ``modules.json``: Transformer -> Pooling(mean) -> Normalize). With a reduction patch
each output token stands for ``size`` input tokens, so the mean is weighted by sizes; with nothing
reduced the result equals the unpatched model's embedding. Texts are batched by length (longest first,
as sentence-transformers does) so padding stays small, and returned in input order.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tokensift.encoder.flops import encoder_flops
from tokensift.encoder.layout import find_layout
from tokensift.encoder.methods.base import EncoderMethod
from tokensift.encoder.patch import EncoderPatch
from tokensift.encoder.schedule import Schedule
from tokensift.errors import EmptyInputError, InputError, ModelError
from tokensift.inputs import whole_number
from tokensift.methods import resolve

Progress = Callable[[int, int], None]


@dataclass
class EmbedResult:
    """Embeddings in input order plus what each text cost."""

    embeddings: np.ndarray
    """``[n, D]`` float32, L2-normalised."""
    tokens: np.ndarray
    """``[n]`` input tokens per text (with [CLS]/[SEP], after truncation)."""
    kept: np.ndarray
    """``[n]`` tokens left at the model's output."""
    layer_tokens: np.ndarray
    """``[n, L]`` tokens entering each layer's attention."""
    flops: np.ndarray
    """``[n]`` FLOPs estimate (see :func:`tokensift.encoder.flops.encoder_flops`)."""
    truncated: list[int]
    """Indices of texts cut to the maximum length (only with ``truncate=True``)."""


def mean_pool(hidden: Tensor, weights: Tensor) -> Tensor:
    """Weighted mean over tokens, L2-normalised: ``[B, N, D]``, ``[B, N]`` -> ``[B, D]``."""
    w = weights.to(hidden.dtype)[..., None]
    pooled = (hidden * w).sum(dim=1) / w.sum(dim=1).clamp_min(1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=-1)


def max_length_for(tokenizer: Any, model: Any, model_path: str | Path | None = None) -> int:
    """Longest input in tokens: sentence-transformers' ``max_seq_length`` when the folder has one
    (256 for all-MiniLM-L6-v2), else the model's position limit."""
    if model_path is not None:
        config = Path(model_path) / "sentence_bert_config.json"
        if config.is_file():
            return int(json.loads(config.read_text())["max_seq_length"])
    limit = int(getattr(model.config, "max_position_embeddings", 512))
    return min(limit, int(getattr(tokenizer, "model_max_length", limit) or limit))


def check_texts(texts: Sequence[str]) -> None:
    """Raise :class:`InputError` unless ``texts`` is a list of strings, :class:`EmptyInputError` naming the first
    empty (or whitespace-only) text."""
    if isinstance(texts, str) or not isinstance(texts, Sequence) or not all(isinstance(t, str) for t in texts):
        raise InputError(f"texts must be a list of strings, got {type(texts).__name__}")
    if not texts:
        raise EmptyInputError("no texts to embed")
    for i, text in enumerate(texts):
        if not text.strip():
            raise EmptyInputError(f"text {i + 1} is empty; remove empty lines (or skip them explicitly)")


def _lengths(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=True)["input_ids"]]


def sentence_embeddings(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    method: str | EncoderMethod | None = None,
    schedule: Schedule | None = None,
    batch_size: int = 32,
    max_length: int = 512,
    truncate: bool = False,
    progress: Progress | None = None,
    **options: Any,
) -> EmbedResult:
    """Embed ``texts`` (mean pooling + normalisation), reducing tokens with ``method`` under ``schedule``.

    ``method=None`` (or a schedule that removes nothing) runs the unmodified model. A text longer than
    ``max_length`` tokens raises :class:`InputError` unless ``truncate`` is set; empty texts raise
    :class:`EmptyInputError`.
    """
    check_texts(texts)
    whole_number(batch_size, "batch_size")
    whole_number(max_length, "max_length", low=2)
    if getattr(tokenizer, "pad_token", None) is None and min(batch_size, len(texts)) > 1:
        raise ModelError("the tokenizer has no padding token, so texts cannot be batched; set tokenizer.pad_token")
    lengths = _lengths(tokenizer, texts)
    too_long = [i for i, n in enumerate(lengths) if n > max_length]
    if too_long and not truncate:
        first = too_long[0]
        raise InputError(
            f"text {first + 1} has {lengths[first]} tokens, more than the {max_length} the model takes"
            f" ({len(too_long)} text(s) too long); pass truncate (--truncate) to cut them"
        )
    layout = find_layout(model)
    patch = None
    if method is not None and schedule is not None:
        patch = EncoderPatch(model, resolve("encoder", method, **options), schedule)
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    n, n_layers = len(texts), layout.n_layers
    embeddings = np.zeros((n, layout.hidden), dtype=np.float32)
    tokens, kept, flops = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64), np.zeros(n)
    layer_tokens = np.zeros((n, n_layers), dtype=np.int64)
    with patch if patch is not None else contextlib.nullcontext(), torch.inference_mode():
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size]
            batch = tokenizer(
                [texts[i] for i in index],
                padding=True,
                truncation=truncate,
                max_length=max_length if truncate else None,
                return_tensors="pt",
            )
            hidden = model(**batch).last_hidden_state
            real = batch["attention_mask"].sum(dim=1)
            state = patch.last if patch is not None else None
            if state is None:
                weights = batch["attention_mask"]
                attention = mlp = real[:, None].expand(-1, n_layers)
            else:
                weights = state.sizes
                attention, mlp = state.layer_tokens(layout.reduce_inside)
            embeddings[index] = mean_pool(hidden, weights).float().numpy()
            tokens[index] = real.numpy()
            kept[index] = (weights > 0).sum(dim=1).numpy()
            layer_tokens[index] = attention.numpy()
            flops[index] = encoder_flops(attention, mlp, hidden=layout.hidden, intermediate=layout.intermediate).numpy()
            if progress is not None:
                progress(min(start + batch_size, n), n)
    return EmbedResult(embeddings, tokens, kept, layer_tokens, flops, too_long if truncate else [])
