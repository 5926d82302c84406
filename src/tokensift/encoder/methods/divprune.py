"""DivPrune: Alvar et al., 2025, "DivPrune: Diversity-based Visual Token Pruning for Large Multimodal
Models" (CVPR, arXiv:2503.02175).

Keep a max-min diverse subset of the tokens (cosine distance of their hidden states), greedily.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tokensift.encoder.methods.base import EncoderMethod, LayerContext, Plan
from tokensift.reduce.merge import drop_target
from tokensift.registry import Paper, register
from tokensift.select.diversity import max_min_diversity


@register
@dataclass(frozen=True)
class DivPrune(EncoderMethod):
    """Greedy max-min diversity selection; the rest are dropped."""

    name: ClassVar[str] = "divprune"
    paper: ClassVar[Paper] = Paper(
        "Alvar et al., 2025",
        "DivPrune: Diversity-based Visual Token Pruning for Large Multimodal Models",
        arxiv="2503.02175",
    )
    summary: ClassVar[str] = "keep a max-min diverse subset of hidden states"

    proportional_attention: bool = False

    def plan(self, ctx: LayerContext) -> Plan:
        keep = max_min_diversity(ctx.states, ctx.keep, valid=ctx.valid, protected=ctx.protected)
        return Plan(drop_target(keep))
