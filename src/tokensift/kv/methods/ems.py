"""EMS: evict-then-merge per head, from a global-local importance score.

Li et al., 2024, "EMS: Adaptive Evict-then-Merge Strategy for Head-wise KV Cache Compression Based on
Global-Local Importance" (arXiv:2412.08521). Accumulated attention over every query favours early tokens and
a recent window's attention favours late ones; EMS adds the two (each normalised per head: the global part
divided by the number of queries that see a token) so neither bias dominates. Each head keeps its top
tokens; of the rest, a token close to a kept key (cosine at least ``min_similarity``) is merged into it and
the others fall into the "zero class" and are evicted, so heads with redundant tokens merge and sparse
heads evict. The merge keeps the attention mass (:func:`tokensift.reduce.kvmerge.fold_into_kept`).
Differences from the paper: its class centres are chosen among the kept tokens by a clustering step and its
kernel computes the scores blockwise on the GPU; here every kept token is a centre.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from tokensift.kv.methods.merge import MassMerging
from tokensift.kv.press import ScorerPress
from tokensift.kv.view import LayerView, last_queries
from tokensift.registry import Paper, option, register
from tokensift.scores import attention_received


@register
@dataclass
class EMS(MassMerging, ScorerPress):
    """Global (normalised, all queries) + local (last ``window`` queries) attention; evicted tokens similar to a kept
    key are merged into it, the rest dropped."""

    name: ClassVar[str] = "ems"
    paper: ClassVar[Paper] = Paper(
        "Li et al., 2024",
        "EMS: Adaptive Evict-then-Merge Strategy for Head-wise KV Cache Compression Based on Global-Local Importance",
        arxiv="2412.08521",
    )
    summary: ClassVar[str] = "global+local attention; evicted tokens merged into similar kept keys, else dropped"
    query_rows = None

    window: int = option(32, low=1)
    min_similarity: float = option(0.5, low=-1.0, high=1.0)

    def score(self, view: LayerView) -> Tensor:
        whole = attention_received(view.queries, view.keys, scaling=view.scaling, normalize=True)[0]
        local = attention_received(last_queries(view, self.window), view.keys, scaling=view.scaling)[0]
        unit = lambda s: s / s.sum(-1, keepdim=True).clamp_min(1e-12)  # noqa: E731
        return unit(whole) + unit(local)
