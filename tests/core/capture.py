"""Test helper: collect the query rows and keys an attention score needs from one forward pass, through
the attention router's observers, so scores can be checked against eager attention weights.

Only the last ``last_queries`` query rows (and their mask rows) are kept per layer; ``None`` keeps all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from tokensift.hooks import Observer, attention_modules, layer_index, observe_attention
from tokensift.scores.attention import attention_received


@dataclass
class LayerAttentionInputs:
    """What one attention layer saw: ``queries [B, H, q, D]`` (last rows), ``keys [B, Hkv, T, D]``,
    the model's mask for those rows (``None``: plain causal) and the softmax scaling."""

    queries: Tensor
    keys: Tensor
    mask: Tensor | None
    scaling: float


@torch.no_grad()
def capture_attention_inputs(
    model: torch.nn.Module,
    input_ids: Tensor,
    *,
    attention_mask: Tensor | None = None,
    last_queries: int | None = None,
    layers: Iterable[int] | None = None,
) -> dict[int, LayerAttentionInputs]:
    """Run ``model`` once and return, per layer, the inputs of its attention over the sequence."""
    if layers is None:
        layers = [layer_index(m) for m in attention_modules(model)]
    captured: dict[int, LayerAttentionInputs] = {}

    def make_observer(layer: int) -> Observer:
        def observe(
            module: torch.nn.Module, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None, kwargs: dict
        ) -> None:
            rows = slice(None) if last_queries is None else slice(max(0, query.shape[2] - last_queries), None)
            mask_rows = None if mask is None else mask[..., rows, :].clone()
            scaling = kwargs.get("scaling") or float(query.shape[-1]) ** -0.5
            captured[layer] = LayerAttentionInputs(query[:, :, rows].clone(), key.clone(), mask_rows, scaling)

        return observe

    with observe_attention(model, {layer: make_observer(layer) for layer in layers}):
        model(input_ids, attention_mask=attention_mask, use_cache=False)
    return captured


def window_attention_scores(
    model: torch.nn.Module,
    input_ids: Tensor,
    *,
    window: int,
    attention_mask: Tensor | None = None,
    forgetting: float = 1.0,
    layers: Iterable[int] | None = None,
) -> dict[int, Tensor]:
    """Per layer ``[B, Hkv, T]``: attention each key receives from the last ``window`` queries.

    ``forgetting < 1`` weights older window rows down (A2SF); ``window = T`` with ``forgetting = 1``
    is H2O's accumulated attention.
    """
    inputs = capture_attention_inputs(
        model, input_ids, attention_mask=attention_mask, last_queries=window, layers=layers
    )
    return {
        layer: attention_received(x.queries, x.keys, scaling=x.scaling, mask=x.mask, forgetting=forgetting)
        for layer, x in inputs.items()
    }
