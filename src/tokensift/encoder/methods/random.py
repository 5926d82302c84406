"""The random baseline: drop uniformly random tokens under the same budget."""

from __future__ import annotations

from dataclasses import dataclass

from tokensift.encoder.methods.base import LayerContext, Plan
from tokensift.reduce.merge import drop_target
from tokensift.scores import random_scores
from tokensift.select.rowwise import topk_mask

_DRAWS = 4096
"""Scores are drawn for a fixed number of positions, so a row gets the same draw alone or padded in a batch."""


@dataclass(frozen=True)
class RandomPrune:
    """Keep a random subset (reproducible from ``seed``; the draw depends on the layer and position)."""

    seed: int = 0
    proportional_attention: bool = False
    needs_qk: bool = False

    def plan(self, ctx: LayerContext) -> Plan:
        n = ctx.valid.shape[1]
        scores = random_scores((max(_DRAWS, n),), seed=self.seed * 1009 + ctx.layer)[:n]
        keep = topk_mask(scores.expand_as(ctx.sizes), ctx.keep, valid=ctx.valid, protected=ctx.protected)
        return Plan(drop_target(keep))
