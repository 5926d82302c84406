"""Decoding-time policies: a KV cache that never holds more than ``max_cache_tokens`` per head, and sparse
decoding over a whole cache (:class:`DecodePolicy`, :func:`sparse_decoding`).

``with bounded(model, "h2o", max_cache_tokens=256, every=16): model.generate(...)`` works with greedy
and sampled generation and with left-padded batches. After prefill each layer keeps its best
``max_cache_tokens - every`` tokens; while decoding the press updates every cached token's score online
from the attention the new query gives it (H2O: sum, A2SF: sum with forgetting, TOVA: the latest
attention, StreamingLLM: position), and when the next token would not fit, the layer evicts down to
``max_cache_tokens - every`` again, i.e. once every ``every`` steps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tokensift.errors import MethodUnsupportedError, ParameterError
from tokensift.hooks import AttentionCall
from tokensift.inputs import whole_number
from tokensift.kv.attach import LayerByLayer, Session, attached
from tokensift.kv.cache import RaggedLayer, Segments
from tokensift.kv.press import Press, ScorerPress
from tokensift.kv.sparse import DecodeState, SparseDecode, allowed_positions, attend_positions
from tokensift.kv.view import LayerView
from tokensift.methods import build, list_methods
from tokensift.reduce import gather_tokens


def online_methods() -> list[str]:
    """The KV methods that can score tokens one decoding step at a time (read from the registry)."""
    return [m.name for m in list_methods("kv") if getattr(m.cls, "online", False)]


class BoundedLayer(RaggedLayer):
    """A ragged layer that tracks per-token scores and positions and evicts to stay under a bound."""

    def __init__(
        self,
        keys: Segments,
        values: Segments,
        scores: list[Tensor],
        positions: list[Tensor],
        bound: DecodeBound,
        state: list[Tensor] | None = None,
    ) -> None:
        super().__init__(keys, values)
        self.scores, self.positions, self.bound = scores, positions, bound
        self.state = state
        """Per row ``[Hkv, T, C]``: what a press with ``state_channels`` remembers of each token."""

    def update(
        self, key_states: Tensor, value_states: Tensor, *args: object, **kwargs: object
    ) -> tuple[Tensor, Tensor]:
        n_new = key_states.shape[2]
        if self.get_seq_length() + n_new > self.bound.max_tokens:
            self._evict(self.bound.max_tokens - max(self.bound.every, n_new))
        out = super().update(key_states, value_states)
        for b in range(len(self.scores)):
            heads = self.scores[b].shape[0]
            start = self.positions[b][:, -1:] + 1
            new_positions = start + torch.arange(n_new, device=start.device)[None]
            self.positions[b] = torch.cat([self.positions[b], new_positions.expand(heads, -1)], dim=1)
            self.scores[b] = torch.cat([self.scores[b], self.scores[b].new_zeros(heads, n_new)], dim=1)
            if self.state is not None:
                fresh = self.bound.press.fresh_state(new_positions.expand(heads, -1))
                self.state[b] = torch.cat([self.state[b], fresh], dim=1)
        return out

    def observe(self, weights: Segments | None) -> None:
        """Fold the attention of the latest query rows into the running scores."""
        assert weights is not None
        press = self.bound.press
        for b, row in enumerate(weights):
            if self.state is not None:
                self.state[b], self.scores[b] = press.update_state(self.state[b], torch.stack(row), self.positions[b])
            else:
                self.scores[b] = press.update_online(self.scores[b], torch.stack(row), self.positions[b])

    def _evict(self, target: int) -> None:
        selection = []
        for b in range(len(self.scores)):
            keep = torch.stack(self.bound.press.choose(self.scores[b], min(target, self.scores[b].shape[1])))
            selection.append(list(keep))
            self.scores[b] = self.scores[b].gather(1, keep)
            self.positions[b] = self.positions[b].gather(1, keep)
            if self.state is not None:
                self.state[b] = self.state[b].gather(1, keep[..., None].expand(-1, -1, self.state[b].shape[-1]))
        self.keep(selection)


@dataclass
class DecodeBound(LayerByLayer):
    """At most ``max_tokens`` cached tokens per head, evicting every ``every`` steps with ``press``."""

    press: ScorerPress
    max_tokens: int
    every: int = 16

    def __post_init__(self) -> None:
        if not isinstance(self.press, ScorerPress) or not self.press.online:
            raise MethodUnsupportedError(
                f"{self.press.spec} cannot score tokens online; decoding-time methods: {', '.join(online_methods())}"
            )
        whole_number(self.every, "every", label="every (evict every N steps)")
        whole_number(self.max_tokens, "max_cache_tokens")
        protected = self.press.protect_first + self.press.protect_last
        if self.max_tokens - self.every < protected + 1:
            raise ParameterError(
                f"max_cache_tokens {self.max_tokens} is too small: it must exceed the {protected} protected tokens "
                f"plus the {self.every}-step eviction interval",
                option="max_cache_tokens",
            )

    def prefill(self, views: list[LayerView], keys: Tensor, values: Tensor, starts: list[int]) -> BoundedLayer:
        target = self.max_tokens - self.every
        seg_k, seg_v, scores, positions, states = [], [], [], [], []
        for view in views:
            row_positions = torch.arange(view.n, device=view.keys.device)[None].expand(view.kv_heads, -1)
            if self.press.state_channels:
                state, row_scores = self.press.prefill_state(view, row_positions)
            else:
                row_scores = self.press.score(view)
            keep = torch.stack(self.press.choose(row_scores, min(target, view.n)))
            seg_k.append([gather_tokens(view.keys[0, h], idx) for h, idx in enumerate(keep)])
            seg_v.append([gather_tokens(view.values[0, h], idx) for h, idx in enumerate(keep)])
            scores.append(row_scores.gather(1, keep))
            positions.append(row_positions.gather(1, keep))
            if self.press.state_channels:
                states.append(state.gather(1, keep[..., None].expand(-1, -1, state.shape[-1])))
        return BoundedLayer(seg_k, seg_v, scores, positions, self, states if self.press.state_channels else None)


@contextlib.contextmanager
def bounded(
    model: torch.nn.Module, method: str | Press = "h2o", *, max_cache_tokens: int, every: int = 16, **options: Any
) -> Iterator[Session]:
    """Keep every compressible layer's cache at most ``max_cache_tokens`` per head while decoding."""
    press: Any = build("kv", method, **options) if isinstance(method, str) else method
    with attached(model, DecodeBound(press, max_cache_tokens, every)) as session:
        yield session


@dataclass
class DecodePolicy:
    """Session policy: no prefill compression; every single-token step of a full-attention layer attends over
    the positions ``press`` picks."""

    press: SparseDecode
    state: DecodeState | None = None
    query_rows: int | None = 0
    needs_probe: bool = False
    needs_hidden: bool = False
    model_wide: bool = False

    def prefill(self, views: list[LayerView], keys: Tensor, values: Tensor, starts: list[int]) -> None:
        return None

    def decode(self, session: Session, idx: int, call: AttentionCall) -> tuple[Tensor, None] | None:
        if self.state is None:
            self.state = DecodeState(sorted(session.compressible))
        n = call.key.shape[2]
        allowed = allowed_positions(call.mask, n)
        positions = self.press.positions(self.state, idx, call.query, call.key, call.scaling, allowed)
        if positions is None or positions.shape[-1] >= n:  # every position: plain attention, bit for bit
            return None
        return attend_positions(call.query, call.key, call.value, positions, call.scaling, allowed), None


@contextlib.contextmanager
def sparse_decoding(model: torch.nn.Module, method: str | SparseDecode, **options: Any) -> Iterator[Session]:
    """Inside the block every decoding step of ``model`` attends sparsely with ``method`` (full cache kept)."""
    press = build("kv", method, **options) if isinstance(method, str) else method
    if not isinstance(press, SparseDecode):
        raise MethodUnsupportedError(f"{press.spec} is not a decoding policy (its stage is {press.stage})")
    with attached(model, DecodePolicy(press)) as session:
        session.compress_prefill = False
        yield session
