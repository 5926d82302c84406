"""DivPrune: Alvar et al., 2025, "DivPrune: Diversity-based Visual Token Pruning for Large Multimodal Models"
(CVPR, arXiv:2503.02175).

Keep the subset of visual tokens (as the language model receives them) that is as diverse as possible: greedy
max-min cosine distance, no attention needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tokensift.reduce.merge import drop_target
from tokensift.registry import Paper, register
from tokensift.select.diversity import max_min_diversity
from tokensift.vision.methods.base import Plan, VisionContext, VisionMethod


@register
@dataclass(frozen=True)
class DivPruneVisual(VisionMethod):
    """Greedy max-min diversity over the projected visual tokens."""

    name: ClassVar[str] = "divprune"
    paper: ClassVar[Paper] = Paper(
        "Alvar et al., 2025",
        "DivPrune: Diversity-based Visual Token Pruning for Large Multimodal Models",
        arxiv="2503.02175",
    )
    summary: ClassVar[str] = "keep the most mutually distant visual tokens (max-min diversity)"

    def plan(self, ctx: VisionContext) -> Plan:
        keep = max_min_diversity(ctx.projected, ctx.keep, valid=ctx.valid, protected=ctx.protected)
        return Plan(drop_target(keep))
