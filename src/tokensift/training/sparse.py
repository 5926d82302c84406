"""Selective training that costs less: forward-with-grad and backward over the selected tokens only.

A masked loss (:class:`~tokensift.training.loss.SelectiveLoss`) still back-propagates through every
position, so choosing 30 % of the tokens saves almost nothing. :func:`sparse_step` does it in two passes:

1. a forward pass without gradients over the whole batch records every layer's keys and values (through
   the attention router, no model code touched) and the per-token statistics the policy selects from;
2. a forward pass *with* gradients over the selected positions only — their own token ids at their own
   positions — whose attention reads the recorded keys/values of every earlier position, with the selected
   positions' entries replaced by the ones just computed (so gradients reach them).

The loss of pass 2 equals the full model's loss on those tokens (same inputs, same context); its gradient is
the selected-token loss's gradient except for the paths that run through the *unselected* positions' keys
and values, which are held constant. With every token selected the two are the same computation. Cost: one
no-grad forward over all tokens plus forward and backward over the selected ones, against a forward and a
backward over all. Attention dropout is not applied in pass 2 (the embedded models have none).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from tokensift.hooks import AttentionCall, Route, layer_index, layer_modules, observe_attention
from tokensift.kv.model import layer_windows
from tokensift.training.loss import masked_mean
from tokensift.training.methods.base import TokenPolicy
from tokensift.training.stats import TokenStats, token_stats

Context = Literal["selected", "labelled"]
"""Which positions carry gradients in pass 2: the selected tokens only, or every labelled token."""


@dataclass
class SparseStep:
    """What :func:`sparse_step` computed: the ``loss`` to back-propagate and what was selected."""

    loss: Tensor
    stats: TokenStats
    mask: Tensor
    positions: Tensor
    """``[B, k]`` the input positions recomputed with gradients (padded rows repeat a position)."""
    recomputed: Tensor
    """``[B, T-1]`` the positions that carry gradients: the selection, or every labelled one (``context``)."""

    @property
    def selected(self) -> int:
        return int(self.mask.sum())

    @property
    def backward_positions(self) -> int:
        """Positions that carry gradients in pass 2 (padding excluded)."""
        return int(self.recomputed.sum())


def select_positions(mask: Tensor) -> tuple[Tensor, Tensor]:
    """``[B, T-1]`` selection -> ``(positions [B, k], real [B, k])``: each row's selected prediction positions,
    ascending, padded to the longest row by repeating the row's last one (0 for a row with none)."""
    counts = mask.sum(1)
    width = max(1, int(counts.max()) if mask.numel() else 1)
    positions = torch.zeros(mask.shape[0], width, dtype=torch.long)
    real = torch.zeros(mask.shape[0], width, dtype=torch.bool)
    for row in range(mask.shape[0]):
        found = torch.nonzero(mask[row]).flatten()
        if found.numel():
            positions[row, : found.numel()] = found
            positions[row, found.numel() :] = found[-1]
            real[row, : found.numel()] = True
    return positions, real


def sparse_step(
    model: torch.nn.Module,
    input_ids: Tensor,
    labels: Tensor,
    policy: TokenPolicy,
    *,
    attention_mask: Tensor | None = None,
    reference: Callable[..., Tensor] | None = None,
    context: Context = "selected",
) -> SparseStep:
    """Select with ``policy`` and return the selected tokens' mean loss, computed over them alone (see above).

    ``labels`` follow transformers (``-100`` = not trained); ``attention_mask`` marks real tokens (right
    padding). ``reference(labels, input_ids=..., attention_mask=...)`` gives a reference model's per-token
    loss for a policy that needs one. ``context="labelled"`` recomputes every labelled position with gradients
    (the loss still only on the selection): only the prompt is constant context, so more of the exact gradient
    survives at the cost of back-propagating the whole response.
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    modules = layer_modules(model)
    recorded: dict[int, tuple[Tensor, Tensor]] = {}

    def record(layer: int) -> Callable[..., None]:
        def keep(module: Any, query: Tensor, key: Tensor, value: Tensor, mask: Any, kwargs: dict) -> None:
            recorded[layer] = (key.detach(), value.detach())

        return keep

    with torch.no_grad(), observe_attention(model, {layer: record(layer) for layer in modules}):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    ref = None
    if policy.needs_reference and reference is not None:
        ref = reference(labels, input_ids=input_ids, attention_mask=attention_mask)
    stats = token_stats(logits, labels, ref)
    del logits
    mask = policy.select(stats)
    recomputed = mask | stats.valid if context == "labelled" else mask
    positions, real = select_positions(recomputed)
    counted = real & mask.gather(1, positions)
    windows = layer_windows(model)
    length = input_ids.shape[1]
    # A padded entry repeats its row's last position; written into that position too, its gradient would be
    # counted once per copy. Padded entries write a spare slot past the end instead, which no query sees.
    slots = torch.where(real, positions, torch.full_like(positions, length))
    key_positions = torch.arange(length + 1)
    allowed = (key_positions[None, None, :] <= positions[:, :, None]) & torch.nn.functional.pad(
        attention_mask.bool(), (0, 1), value=False
    )[:, None, :]

    def attend(call: AttentionCall) -> tuple[Tensor, None]:
        layer = layer_index(call.module)
        keys, values = (torch.nn.functional.pad(t, (0, 0, 0, 1)) for t in recorded[layer])
        index = slots[:, None, :, None].expand(-1, keys.shape[1], -1, keys.shape[3])
        key = keys.scatter(2, index, call.key)
        value = values.scatter(2, index, call.value)
        visible = allowed
        window = windows[layer]
        if window is not None:
            visible = visible & (positions[:, :, None] - key_positions[None, None, :] < window)
        out = torch.nn.functional.scaled_dot_product_attention(
            call.query, key, value, attn_mask=visible[:, None], scale=call.scaling, enable_gqa=True
        )
        return out.transpose(1, 2).contiguous(), None

    with Route(model, dict.fromkeys(modules.values(), attend)):
        selected_logits = model(
            input_ids=input_ids.gather(1, positions), position_ids=positions, use_cache=False
        ).logits
    targets = labels.gather(1, positions + 1)
    targets = torch.where(counted, targets, torch.zeros_like(targets))
    losses = torch.nn.functional.cross_entropy(
        selected_logits.reshape(-1, selected_logits.shape[-1]).float(), targets.reshape(-1), reduction="none"
    ).view(targets.shape)
    return SparseStep(masked_mean(losses, counted), stats, mask, positions, recomputed)
