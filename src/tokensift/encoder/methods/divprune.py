"""DivPrune: Alvar et al., 2025, "DivPrune: Diversity-based Visual Token Pruning for Large Multimodal
Models" (CVPR).

Keep a max-min diverse subset of the tokens (cosine distance of their hidden states), greedily.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokensift.encoder.methods.base import LayerContext, Plan
from tokensift.reduce.merge import drop_target
from tokensift.select.diversity import max_min_diversity


@dataclass(frozen=True)
class DivPrune:
    """Greedy max-min diversity selection; the rest are dropped."""

    proportional_attention: bool = False
    needs_qk: bool = False

    def plan(self, ctx: LayerContext) -> Plan:
        keep = max_min_diversity(ctx.states, ctx.keep, valid=ctx.valid, protected=ctx.protected)
        return Plan(drop_target(keep))
