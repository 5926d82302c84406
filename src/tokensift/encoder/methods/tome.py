"""ToMe: Bolya et al., 2023, "Token Merging: Your ViT But Faster" (ICLR, arXiv:2210.09461).

Bipartite soft matching on the keys averaged over heads, size-weighted merging, proportional attention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tokensift.encoder.methods.base import EncoderMethod, LayerContext, Plan
from tokensift.registry import Paper, register
from tokensift.select.matching import bipartite_soft_matching


@register
@dataclass(frozen=True)
class ToMe(EncoderMethod):
    """Merge the ``r`` most similar A->B pairs at every reduction layer."""

    name: ClassVar[str] = "tome"
    paper: ClassVar[Paper] = Paper("Bolya et al., 2023", "Token Merging: Your ViT But Faster", arxiv="2210.09461")
    summary: ClassVar[str] = "merge the most similar A->B token pairs (keys), size-weighted; proportional attention"
    needs_qk = True
    merges = True

    proportional_attention: bool = True

    def plan(self, ctx: LayerContext) -> Plan:
        target = bipartite_soft_matching(ctx.key_metric(), ctx.remove, valid=ctx.valid, protected=ctx.protected)
        return Plan(target)
