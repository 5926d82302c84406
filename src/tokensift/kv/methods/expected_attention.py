"""Expected Attention: attention estimated from the distribution of future queries.

Devoto et al., 2025, "Expected Attention: KV Cache Compression by Estimating Attention from Future
Queries Distribution" (arXiv:2510.00636, kvpress): the prompt's queries (before rotary embedding) give a
Gaussian model of future queries; rotated by the mean rotary rotation of the next ``n_future``
positions, it yields the expected attention of each key, weighted by its value norm
(:func:`tokensift.scores.expected_attention_scores`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from tokensift.errors import MethodUnsupportedError
from tokensift.kv.press import ScorerPress
from tokensift.kv.view import LayerView
from tokensift.registry import Paper, option, register
from tokensift.scores import average_rotation, expected_attention_scores, unrotate


@register
@dataclass
class ExpectedAttention(ScorerPress):
    """Gaussian future-query model over the queries after the ``protect_first`` sinks (kept)."""

    name: ClassVar[str] = "expected_attention"
    paper: ClassVar[Paper] = Paper(
        "Devoto et al., 2025",
        "Expected Attention: KV Cache Compression by Estimating Attention from Future Queries Distribution",
        arxiv="2510.00636",
    )
    summary: ClassVar[str] = "attention expected from the future-query distribution x value norm"
    query_rows = None

    protect_first: int = option(4, low=0)
    n_future: int = option(512, low=1)
    use_covariance: bool = True
    _rotations: dict[tuple[int, int], Tensor] = field(default_factory=dict, init=False, repr=False)

    def score(self, view: LayerView) -> Tensor:
        if view.inv_freq is None:
            raise MethodUnsupportedError("expected_attention needs rotary position embeddings; this layer has none")
        n_queries = view.queries.shape[2]
        positions = torch.arange(view.n - n_queries, view.n, device=view.keys.device)[None]
        raw = unrotate(view.queries, positions, view.inv_freq)[:, :, self.protect_first :]
        key = (id(view.inv_freq), view.n)
        if key not in self._rotations:  # the same for every layer sharing the rotary frequencies
            self._rotations[key] = average_rotation(view.inv_freq, view.n, self.n_future)
        rotation = self._rotations[key]
        return expected_attention_scores(raw, view.keys, view.values, rotation, use_covariance=self.use_covariance)[0]
