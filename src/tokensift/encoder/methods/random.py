"""The random baseline: drop uniformly random tokens under the same budget."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tokensift.encoder.methods.base import EncoderMethod, LayerContext, Plan
from tokensift.reduce.merge import drop_target
from tokensift.registry import register
from tokensift.scores import random_scores
from tokensift.select.rowwise import topk_mask

_DRAWS = 4096
"""Scores are drawn for a fixed number of positions, so a row gets the same draw alone or padded in a batch."""


@register
@dataclass(frozen=True)
class RandomPrune(EncoderMethod):
    """Keep a random subset (reproducible from ``seed``; the draw depends on the layer and position)."""

    name: ClassVar[str] = "random"
    summary: ClassVar[str] = "drop uniformly random tokens under the same budget"

    seed: int = 0
    proportional_attention: bool = False

    def plan(self, ctx: LayerContext) -> Plan:
        n = ctx.valid.shape[1]
        scores = random_scores((max(_DRAWS, n),), seed=self.seed * 1009 + ctx.layer)[:n]
        keep = topk_mask(scores.expand_as(ctx.sizes), ctx.keep, valid=ctx.valid, protected=ctx.protected)
        return Plan(drop_target(keep))
