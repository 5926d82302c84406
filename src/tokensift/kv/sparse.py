"""Sparse decoding over a full cache: each decoding step attends only to the cached tokens that matter to it.

Nothing is evicted — the prefill's cache stays whole, so a token ignored at one step can be read at the next.
A :class:`SparseDecode` method picks, per decoding step and full-attention layer, ``k`` cached positions
(``ratio``: the share of the cache a step does *not* attend; the budget convention of every press) and the
layer attends over those alone. The prefill and any multi-token forward (the question) attend fully;
sliding-window layers are left alone (their window is already small).

:class:`tokensift.kv.decode.DecodePolicy` is the session policy that applies it (``answer(..., decode=press)``
or ``with sparse_decoding(model, "tokenselect", ratio=0.9): model.generate(...)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from tokensift.errors import MethodUnsupportedError
from tokensift.kv.press import ScorerPress
from tokensift.kv.view import LayerView, allowed_keys


@dataclass
class SparseDecode(ScorerPress):
    """A decoding policy: :meth:`positions` says which cached tokens one step of one layer attends."""

    stage: ClassVar[str] = "decode"

    def score(self, view: LayerView) -> Tensor:
        raise MethodUnsupportedError(f"{self.name} chooses tokens per decoding step; it does not compress a prefill")

    def positions(
        self, state: DecodeState, layer: int, query: Tensor, keys: Tensor, scaling: float, allowed: Tensor | None
    ) -> Tensor | None:
        """``[B, Hkv, k]`` cached positions this step attends at ``layer`` (None: every position).

        ``query [B, H, 1, D]``, ``keys [B, Hkv, T, D]`` (the whole cache, this step's token last), ``allowed
        [B, T]`` the positions the model's mask lets the step see (None: all; left padding is not)."""
        raise NotImplementedError

    def budget_for(self, n: int) -> int:
        """Positions a step attends out of ``n`` cached ones (the current token always among them)."""
        return max(1, min(n, self.budgeted.tokens(n)))


@dataclass
class DecodeState:
    """What a decoding policy carries across the layers of one step (and across steps)."""

    layers: list[int]
    """The full-attention layers, in order."""
    shared: dict[str, Any] = field(default_factory=dict)


def group_logits(query: Tensor, keys: Tensor, scaling: float, allowed: Tensor | None) -> Tensor:
    """``[B, Hkv, G, T]`` scaled dot products of each KV head's ``G`` query heads with its keys (masked: -inf)."""
    batch, heads, _, dim = query.shape
    kv_heads = keys.shape[1]
    grouped = query.float().reshape(batch, kv_heads, heads // kv_heads, dim)
    logits = (grouped @ keys.float().transpose(-1, -2)) * scaling
    if allowed is not None:
        logits = logits.masked_fill(~allowed[:, None, None, :], float("-inf"))
    return logits


def top_positions(scores: Tensor, k: int, keep_last: int = 1) -> Tensor:
    """``[B, Hkv, k]`` ascending positions: the ``keep_last`` newest always, then the best of ``scores [B, Hkv, T]``."""
    n = scores.shape[-1]
    k = min(k, n)
    boosted = scores.clone()
    boosted[..., n - min(keep_last, k) :] = float("inf")
    return boosted.topk(k, dim=-1).indices.sort(dim=-1).values


def attend_positions(
    query: Tensor, keys: Tensor, values: Tensor, positions: Tensor, scaling: float, allowed: Tensor | None = None
) -> Tensor:
    """Attention of ``query [B, H, 1, D]`` over ``keys, values [B, Hkv, T, D]`` at ``positions [B, Hkv, k]``
    (those not ``allowed [B, T]`` masked out); returns ``[B, 1, H, Dv]`` (transformers' layout)."""
    index = positions[..., None]
    picked_k = keys.gather(2, index.expand(-1, -1, -1, keys.shape[-1]))
    picked_v = values.gather(2, index.expand(-1, -1, -1, values.shape[-1]))
    mask = None
    if allowed is not None:
        group = query.shape[1] // keys.shape[1]
        seen = allowed[:, None, :].expand(-1, keys.shape[1], -1).gather(2, positions)  # [B, Hkv, k]
        mask = seen.repeat_interleave(group, dim=1)[:, :, None, :]
    out = torch.nn.functional.scaled_dot_product_attention(
        query, picked_k, picked_v, attn_mask=mask, scale=scaling, enable_gqa=True
    )
    return out.transpose(1, 2).contiguous()


def allowed_positions(mask: Tensor | None, n: int) -> Tensor | None:
    """``[B, T]`` positions a single-query step may see, from the model's mask (None: no mask, all)."""
    allowed = allowed_keys(mask, n)
    return None if allowed is None or bool(allowed.all()) else allowed
