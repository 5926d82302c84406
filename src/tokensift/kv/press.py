"""A press: one KV-cache compression method, split like kvpress presses into ``score`` and ``compress``.

The adapter (:mod:`tokensift.kv.attach`) hands a press one :class:`LayerView` per batch row and layer
(left padding already cut off, so a row is scored exactly as if it ran alone); the press returns, per KV
head, the positions to keep. Only torch and the tokensift cores are imported here, so the method
registry stays fast to load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from tokensift.errors import MethodUnsupportedError, ParameterError
from tokensift.select import kept_count, topk_indices


@dataclass
class LayerView:
    """What a press sees of one attention layer for one batch row right after prefill.

    ``queries [1, H, q, D]`` are the last ``q`` query rows (after rotary embedding), ``keys`` and
    ``values [1, Hkv, T, D]`` the whole cache of the row, ``inv_freq`` the layer's rotary frequencies.
    ``probes`` holds, for a press with :attr:`Press.needs_probe`, the ``(queries [1, H, m, D], keys [1, Hkv,
    m, D])`` of each probe pass run after the prefill (see :mod:`tokensift.kv.probe`).
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

    @property
    def n(self) -> int:
        return int(self.keys.shape[2])

    @property
    def kv_heads(self) -> int:
        return int(self.keys.shape[1])


Selection = list[Tensor]
"""Kept positions of one row and layer: one ascending index tensor per KV head (lengths may differ)."""


@dataclass
class Press:
    """Base press: budget from ``ratio`` (fraction removed) or ``keep_tokens``; protected first/last tokens.

    Subclasses implement :meth:`score` (``[Hkv, T]``, higher = keep) and may override :meth:`select`.
    """

    ratio: float = 0.0
    keep_tokens: int | None = None
    protect_first: int = 0
    protect_last: int = 0

    query_rows: ClassVar[int | None] = 0
    """How many of the last query rows :meth:`score` reads (``None``: all of them)."""
    online: ClassVar[bool] = False
    """Whether the score can be updated one decoding step at a time (see :meth:`update_online`)."""
    needs_probe: ClassVar[bool] = False
    """Whether :meth:`score` reads probe passes (``LayerView.probes``) fed after the prefill: such a press
    compresses all layers at once, after the prefill forward, with :meth:`select_layers`."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise ParameterError(f"compression ratio must be in [0, 1), got {self.ratio}")
        if self.keep_tokens is not None and self.keep_tokens < 1:
            raise ParameterError(f"keep_tokens must be at least 1, got {self.keep_tokens}")
        if self.protect_first < 0 or self.protect_last < 0:
            raise ParameterError("protected token counts must be non-negative")

    @property
    def name(self) -> str:
        return type(self).__name__.removesuffix("Press").lower()

    @property
    def active(self) -> bool:
        """False when nothing would be removed (ratio 0 and no absolute budget): the cache is left as is."""
        return self.ratio > 0 or self.keep_tokens is not None

    def budget(self, view: LayerView) -> int:
        """Tokens each KV head of this layer keeps (exact)."""
        if self.keep_tokens is not None:
            if self.keep_tokens > view.n:
                raise ParameterError(f"budget of {self.keep_tokens} tokens is larger than the context ({view.n})")
            return self.keep_tokens
        return max(1, kept_count(view.n, keep_ratio=1.0 - self.ratio))

    def protection(self, k: int, n: int) -> tuple[int, int]:
        """Protected first/last counts clipped to a budget of ``k`` of ``n`` tokens (first ones win)."""
        first = min(self.protect_first, k, n)
        return first, min(self.protect_last, k - first, n - first)

    def score(self, view: LayerView) -> Tensor:
        raise NotImplementedError

    def select(self, view: LayerView, scores: Tensor) -> Selection:
        """The budget's worth of positions per head (see :meth:`choose`)."""
        return self.choose(scores, self.budget(view))

    def choose(self, scores: Tensor, k: int) -> Selection:
        """Top ``k`` of ``scores [Hkv, T]`` per head with the protected tokens (ties to the earlier position)."""
        first, last = self.protection(k, scores.shape[-1])
        return list(topk_indices(scores, k, protect_first=first, protect_last=last))

    def select_layers(self, views: dict[int, LayerView], scores: dict[int, Tensor]) -> dict[int, Selection]:
        """Kept positions of every layer of one row (layer by layer unless a press shares a budget)."""
        return {layer: self.select(views[layer], scores[layer]) for layer in sorted(views)}

    def probe_inputs(self, ids: list[int]) -> list[list[int]]:
        """Token ids of the probe passes to run after a prefill of ``ids`` (none unless :attr:`needs_probe`)."""
        return []

    def compress(self, view: LayerView) -> Selection:
        """Kept positions per KV head for one row and layer."""
        return self.select(view, self.score(view))

    def update_online(self, scores: Tensor, attention: Tensor, positions: Tensor) -> Tensor:
        """New running scores after one decoding step (``attention``: weight each cached token received)."""
        raise MethodUnsupportedError(f"{self.name} cannot update its scores while decoding")


def last_queries(view: LayerView, rows: int | None) -> Tensor:
    """The last ``rows`` captured query rows of ``view`` (all when ``None``)."""
    return view.queries if rows is None else view.queries[:, :, max(0, view.queries.shape[2] - rows) :]


def per_head(scores: Tensor, kv_heads: int) -> Tensor:
    """Broadcast a layer-wide ``[T]`` score to every KV head, ``[Hkv, T]``."""
    return scores[None].expand(kv_heads, -1).clone()


def recency(n: int, device: torch.device | None = None) -> Tensor:
    """Scores that prefer recent tokens: the position itself."""
    return torch.arange(n, dtype=torch.float32, device=device)
