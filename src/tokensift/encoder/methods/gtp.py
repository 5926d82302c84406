"""GTP-ViT: Xu et al., 2024, "GTP-ViT: Efficient Vision Transformers via Graph-based Token Propagation" (WACV,
arXiv:2311.03035).

Tokens that are easy to do without go, but their information is not thrown away: each one is propagated over a
sparse similarity graph to the kept tokens it resembles most, added with a small coefficient ``alpha`` (sizes
carried along, so a propagated token counts as ``alpha`` of its size). Which tokens go: the lowest "mixed"
attention score, the attention a token pays itself times the attention it receives, maximum over heads (the
paper's MixedAttnMax). The graph: cosine similarity of the keys averaged over heads, each propagated token
linked to its ``neighbours`` most similar kept tokens, weights normalised so a token is propagated whole.
The paper builds its graph once from the patch embeddings; ours is rebuilt at each reduction from that layer's
keys (the tokens have changed by then).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from tokensift.encoder.methods.base import EncoderMethod, LayerContext, Plan
from tokensift.reduce.merge import drop_target
from tokensift.registry import Paper, option, register
from tokensift.select.matching import cosine_similarity_matrix
from tokensift.select.rowwise import topk_mask


@register
@dataclass(frozen=True)
class GTP(EncoderMethod):
    """Drop the tokens with the lowest self x received attention; propagate them over a similarity graph."""

    name: ClassVar[str] = "gtp"
    paper: ClassVar[Paper] = Paper(
        "Xu et al., 2024",
        "GTP-ViT: Efficient Vision Transformers via Graph-based Token Propagation",
        arxiv="2311.03035",
    )
    summary: ClassVar[str] = "drop low self x received attention tokens, propagate them to similar kept tokens"
    needs_qk = True
    propagates = True

    alpha: float = option(0.1, low=0.0)
    neighbours: int = option(4, low=1)
    proportional_attention: bool = True

    def plan(self, ctx: LayerContext) -> Plan:
        attention = ctx.attention()  # [B, H, N, N]
        own = torch.diagonal(attention, dim1=-2, dim2=-1).amax(dim=1)
        real = ctx.valid.float()[:, None, :, None]
        received = (attention * real).sum(dim=2).amax(dim=1)
        keep = topk_mask(own * received, ctx.keep, valid=ctx.valid, protected=ctx.protected)
        going = ctx.valid & ~keep
        similarity = cosine_similarity_matrix(ctx.key_metric())  # [B, N, N]
        # each going token (column) linked to its most similar kept tokens (rows)
        links = similarity.masked_fill(~keep[:, :, None] | ~going[:, None, :], float("-inf"))
        k = min(self.neighbours, similarity.shape[-1])
        top = links.topk(k, dim=1)
        graph = torch.zeros_like(similarity).scatter_(1, top.indices, top.values.clamp_min(0).nan_to_num(0.0))
        graph = torch.where(torch.isfinite(graph), graph, 0.0)
        graph = graph / graph.sum(dim=1, keepdim=True).clamp_min(1e-12)
        return Plan(drop_target(keep), spread=self.alpha * graph * going[:, None, :])
