"""ToMe: Bolya et al., 2023, "Token Merging: Your ViT But Faster" (ICLR).

Bipartite soft matching on the keys averaged over heads, size-weighted merging, proportional attention.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokensift.encoder.methods.base import LayerContext, Plan
from tokensift.select.matching import bipartite_soft_matching


@dataclass(frozen=True)
class ToMe:
    """Merge the ``r`` most similar A->B pairs at every reduction layer."""

    proportional_attention: bool = True
    needs_qk: bool = True

    def plan(self, ctx: LayerContext) -> Plan:
        target = bipartite_soft_matching(ctx.key_metric(), ctx.remove, valid=ctx.valid, protected=ctx.protected)
        return Plan(target)
