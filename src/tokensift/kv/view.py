"""What a press sees of one attention layer after a prefill, and what it returns.

The adapter (:mod:`tokensift.kv.attach`) hands a press one :class:`LayerView` per batch row and layer
(left padding already cut off, so a row is scored exactly as if it ran alone); the press returns, per KV
head, the positions to keep (a :data:`Selection`). Only torch is imported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor


@dataclass
class LayerView:
    """One attention layer of one batch row right after prefill.

    ``queries [1, H, q, D]`` are the last ``q`` query rows (after rotary embedding), ``keys`` and
    ``values [1, Hkv, T, D]`` the whole cache of the row, ``inv_freq`` the layer's rotary frequencies.
    ``probes`` holds, for a press whose scorer needs probe passes, the ``(queries [1, H, m, D], keys [1, Hkv,
    m, D])`` of each probe pass run after the prefill (see :mod:`tokensift.kv.probe`); ``probe_scores``
    instead, for a scorer whose scores the passes form themselves (KVzip), each pass's ``[Hkv, T]``.
    ``hidden [1, T, d]`` is the layer's input hidden states, for a scorer that reads them (KVzap);
    ``early_score`` the scores taken while the forward still runs, for a press that selects all layers at
    its end (so only ``[Hkv, T]`` per layer waits, not the hidden states).
    """

    layer: int
    n_layers: int
    row: int
    queries: Tensor
    keys: Tensor
    values: Tensor
    scaling: float
    inv_freq: Tensor | None = None
    probes: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    probe_scores: list[Tensor] = field(default_factory=list)
    hidden: Tensor | None = None
    early_score: Tensor | None = None

    @property
    def n(self) -> int:
        return int(self.keys.shape[2])

    @property
    def kv_heads(self) -> int:
        return int(self.keys.shape[1])


Selection = list[Tensor]
"""Kept positions of one row and layer: one ascending index tensor per KV head (lengths may differ)."""


class ScorerNeeds(Protocol):
    """What the adapter reads from the press that scores (the innermost press of a composition)."""

    @property
    def query_rows(self) -> int | None: ...

    @property
    def needs_probe(self) -> bool: ...

    @property
    def scores_in_probe(self) -> bool: ...

    @property
    def needs_hidden(self) -> bool: ...

    def probe_inputs(self, ids: list[int]) -> list[list[int]]: ...


class PressLike(Protocol):
    """The part of :class:`tokensift.kv.press.Press` the adapter calls (kept here so it imports no press)."""

    @property
    def name(self) -> str: ...

    @property
    def scorer(self) -> ScorerNeeds: ...

    @property
    def active(self) -> bool: ...

    @property
    def model_wide(self) -> bool: ...

    @property
    def wide(self) -> bool: ...

    def score(self, view: LayerView) -> Tensor: ...

    def compress(self, view: LayerView) -> Selection: ...

    def select_layers(self, views: dict[int, LayerView], scores: dict[int, Tensor]) -> dict[int, Selection]: ...

    @property
    def rows_wanted(self) -> int | None: ...

    def build(
        self, keys: Tensor, values: Tensor, selection: list[Selection], views: list[LayerView], starts: list[int]
    ) -> Any: ...


def last_queries(view: LayerView, rows: int | None) -> Tensor:
    """The last ``rows`` captured query rows of ``view`` (all when ``None``)."""
    return view.queries if rows is None else view.queries[:, :, max(0, view.queries.shape[2] - rows) :]


def last_token_logits(view: LayerView) -> Tensor:
    """``[H, T]`` the prompt's last token's attention logits ``q·k`` (unscaled, float32) per query head over every
    key of row 0 — what GemFilter and PromptDistill select by."""
    query = view.queries[0, :, -1].float()  # [H, D]
    keys = view.keys[0].float()  # [Hkv, T, D]
    group = query.shape[0] // keys.shape[0]
    return torch.einsum("hd,htd->ht", query, keys.repeat_interleave(group, dim=0))


def per_head(scores: Tensor, kv_heads: int) -> Tensor:
    """Broadcast a layer-wide ``[T]`` score to every KV head, ``[Hkv, T]``."""
    return scores[None].expand(kv_heads, -1).clone()


def recency(n: int, device: torch.device | None = None) -> Tensor:
    """Scores that prefer recent tokens: the position itself."""
    return torch.arange(n, dtype=torch.float32, device=device)


def shift(selection: Sequence[Tensor], offset: int) -> Selection:
    """A row's selection moved by ``offset`` positions (from positions in the row to positions in the batch)."""
    return [kept + offset for kept in selection]


def allowed_keys(mask: Tensor | None, n: int) -> Tensor | None:
    """``[B, n]`` the keys the last query row may see under the model's mask (boolean, or additive with 0 for
    allowed); None without a mask."""
    if mask is None:
        return None
    last = mask[:, 0, -1, :n]
    return last if last.dtype == torch.bool else torch.isfinite(last) & (last == 0)
