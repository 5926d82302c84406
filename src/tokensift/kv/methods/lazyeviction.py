"""LazyEviction: keep the tokens that keep coming back, and evict only after watching them for a while.

Zhang et al., 2025, "LazyEviction: Lagged KV Eviction with Attention Pattern Observation for Efficient Long
Reasoning" (arXiv:2506.15969): in long reasoning traces many tokens regain high attention after many decoding
steps (*token importance recurrence*), so evicting by the latest or the accumulated attention drops tokens that
will be needed again. LazyEviction records each token's recurrence pattern and evicts lagged, with an
observation window, prioritising the tokens whose pattern says they will not recur soon.

What is recorded here (the paper's text was not available offline; this follows its abstract, and the
thresholds are ours): a decoding step *recalls* a token when the token gets at least ``threshold`` times the
uniform share ``1/T`` of the step's attention (mean over the KV head's query heads). Per token: the step of
its last recall, its maximum recurrence interval (the longest gap between two recalls so far) and its number
of recalls. Its priority is ``interval - (now - last recall)``: positive while the token is still inside its
usual gap (it is expected to come back), falling as it overstays; a token never recalled has interval 0, so it
ages out oldest first. Tokens younger than ``window`` steps are never evicted (they have not been observed
yet), and eviction itself is lagged: with ``bounded(..., every=N)`` the cache is cut back only every ``N`` steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from tokensift.kv.press import ScorerPress
from tokensift.kv.view import LayerView
from tokensift.registry import Paper, option, register
from tokensift.scores import attention_received

LAST, INTERVAL, RECALLS = 0, 1, 2


@register
@dataclass
class LazyEviction(ScorerPress):
    """Recurrence-aware priority (interval minus time since the last recall); the newest ``window`` tokens kept."""

    name: ClassVar[str] = "lazyeviction"
    paper: ClassVar[Paper] = Paper(
        "Zhang et al., 2025",
        "LazyEviction: Lagged KV Eviction with Attention Pattern Observation for Efficient Long Reasoning",
        arxiv="2506.15969",
    )
    summary: ClassVar[str] = "keep tokens still within their attention-recurrence interval; the newest window kept"
    query_rows = 1
    online = True
    state_channels = 3

    window: int = option(16, low=1)
    threshold: float = option(1.0, low=0.0)

    def recalled(self, attention: Tensor) -> Tensor:
        """``[Hkv, T]`` whether a step's attention recalls each token."""
        return attention >= self.threshold / attention.shape[-1]

    def score(self, view: LayerView) -> Tensor:
        """At prefill (used alone, without a decoding bound): the recalled tokens, then the newest."""
        positions = torch.arange(view.n, device=view.keys.device)[None].expand(view.kv_heads, -1)
        return self.prefill_state(view, positions)[1]

    def priority(self, state: Tensor, positions: Tensor) -> Tensor:
        now = positions.max()
        scores = state[..., INTERVAL] - (now - state[..., LAST])
        return scores.masked_fill(now - positions < self.window, float("inf"))

    def prefill_state(self, view: LayerView, positions: Tensor) -> tuple[Tensor, Tensor]:
        attention = attention_received(view.queries[:, :, -1:], view.keys, scaling=view.scaling)[0]
        state = self.fresh_state(positions)
        recalled = self.recalled(attention)
        state[..., LAST] = torch.where(recalled, positions.max().float(), state[..., LAST])
        state[..., RECALLS] = recalled.float()
        return state, self.priority(state, positions)

    def fresh_state(self, positions: Tensor) -> Tensor:
        state = positions.new_zeros(*positions.shape, self.state_channels, dtype=torch.float32)
        state[..., LAST] = positions.float()  # not yet recalled: its own step counts as the last
        return state

    def update_state(self, state: Tensor, attention: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        now = positions.max().float()
        recalled = self.recalled(attention)
        state = state.clone()
        again = recalled & (state[..., RECALLS] > 0)  # a recurrence: the gap since the previous recall counts
        gap = now - state[..., LAST]
        state[..., INTERVAL] = torch.where(again, torch.maximum(state[..., INTERVAL], gap), state[..., INTERVAL])
        state[..., LAST] = torch.where(recalled, now, state[..., LAST])
        state[..., RECALLS] += recalled.float()
        return state, self.priority(state, positions)
