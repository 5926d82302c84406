"""Zero-TPrune: Wang et al., 2024, "Zero-TPrune: Zero-Shot Token Pruning through Leveraging of the
Attention Graph in Pre-Trained Transformers" (CVPR, arXiv:2305.17328).

I-stage: Weighted Page Rank on the attention graph ranks tokens by importance (averaged over heads).
S-stage: the less important half is matched against the more important half by key similarity and the
``r`` tokens most similar to an important token are pruned: unimportant *and* redundant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tokensift.encoder.methods.base import EncoderMethod, LayerContext, Plan
from tokensift.reduce.merge import drop_target
from tokensift.registry import Paper, register
from tokensift.scores.graph import weighted_page_rank
from tokensift.select.matching import best_match, best_sources, cosine_similarity_matrix
from tokensift.select.rowwise import rank_descending


@register
@dataclass(frozen=True)
class ZeroTPrune(EncoderMethod):
    """Importance-guided, similarity-based pruning."""

    name: ClassVar[str] = "zero_tprune"
    paper: ClassVar[Paper] = Paper(
        "Wang et al., 2024",
        "Zero-TPrune: Zero-Shot Token Pruning through Leveraging of the Attention Graph in Pre-Trained Transformers",
        arxiv="2305.17328",
    )
    summary: ClassVar[str] = (
        "page-rank importance on the attention graph; prune unimportant tokens similar to important ones"
    )
    needs_qk = True

    iterations: int = 30
    proportional_attention: bool = False

    def plan(self, ctx: LayerContext) -> Plan:
        importance = weighted_page_rank(ctx.attention(), valid=ctx.valid, iterations=self.iterations).mean(dim=1)
        mergeable = ctx.valid & ~ctx.protected
        rank = rank_descending(importance.masked_fill(~mergeable, float("-inf")))
        important = mergeable & (rank < (mergeable.sum(dim=1, keepdim=True) + 1) // 2)
        score, _ = best_match(cosine_similarity_matrix(ctx.key_metric()), mergeable & ~important, important)
        return Plan(drop_target(~best_sources(score, ctx.remove)))
