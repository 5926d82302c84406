"""GTP-ViT: Xu et al., 2024, "GTP-ViT: Efficient Vision Transformers via Graph-based Token Propagation" (WACV,
arXiv:2311.03035).

Tokens that are easy to do without go, but their information is not thrown away: each one is propagated over a
sparse graph to the kept tokens it is linked to, added with a small coefficient ``alpha``: a kept token becomes
``x_i + alpha * sum_j W_ij x_j`` over the tokens ``j`` going now. Which tokens go: the lowest "mixed" attention
score, the attention a token pays itself times the attention it receives from every query, each the maximum
over heads (the paper's MixedAttnMax). As in the authors' code (Ackesnal/GTP-ViT, ``models_v3.py``), the graph
is fixed before the first layer and only restricted to the surviving tokens afterwards: by default the
``spatial`` one, each patch linked to its 8 grid neighbours, symmetrically normalised by the degrees of the full
grid (``D^-1/2 A D^-1/2``); a propagated token with no surviving neighbour is lost. Token sizes are carried
(``alpha`` of a propagated token's size is added), but attention is not weighted by them unless
``proportional_attention`` (the authors' ``--token_scale``, off by default).

``graph="similarity"`` is our variant for inputs without a grid: each going token linked to its ``neighbours``
most similar kept tokens by the cosine of this layer's keys (averaged over heads), weights normalised so the
token is propagated whole. On a text encoder (no square grid) ``spatial`` links each token to its neighbours in
the sequence.

The reference reduces after a block's attention and before its MLP; on ViT-family models the patch reduces
between blocks (see :mod:`tokensift.encoder.layout`), so there the next block's MLP is the first on fewer tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from tokensift.encoder.methods.base import EncoderMethod, LayerContext, Plan
from tokensift.errors import ModelError
from tokensift.reduce.merge import drop_target
from tokensift.registry import Paper, option, register
from tokensift.select.matching import cosine_similarity_matrix
from tokensift.select.rowwise import topk_mask


def mixed_attention_max(attention: Tensor, valid: Tensor) -> Tensor:
    """``[B, N]`` GTP's MixedAttnMax rank: ``max_h A[h, i, i] * max_h sum_q A[h, q, i]`` over real queries."""
    own = torch.diagonal(attention, dim1=-2, dim2=-1).amax(dim=1)
    received = (attention * valid.float()[:, None, :, None]).sum(dim=2).amax(dim=1)
    return own * received


def spatial_graph(positions: Tensor, reducible: Tensor) -> Tensor:
    """``[B, N, N]`` the normalised grid graph between the current tokens (``positions``: their index on the grid
    of ``reducible`` cells, raster order, -1 for none): 8-neighbourhood on a square grid, else the sequence's
    two neighbours; weights ``1 / sqrt(d_i d_j)`` with each cell's degree on the full grid."""
    out = torch.zeros(*positions.shape, positions.shape[1], device=positions.device)
    for row, (pos, cells) in enumerate(zip(positions, reducible.tolist(), strict=True)):
        real = pos >= 0
        side = math.isqrt(cells)
        if side * side == cells and side > 1:
            r, c = pos.div(side, rounding_mode="floor"), pos % side
            linked = ((r[:, None] - r[None, :]).abs() <= 1) & ((c[:, None] - c[None, :]).abs() <= 1)
            span_r = torch.minimum(r + 1, torch.full_like(r, side - 1)) - (r - 1).clamp_min(0) + 1
            span_c = torch.minimum(c + 1, torch.full_like(c, side - 1)) - (c - 1).clamp_min(0) + 1
            degree = span_r * span_c - 1
        else:
            linked = (pos[:, None] - pos[None, :]).abs() <= 1
            degree = (pos > 0).long() + (pos < cells - 1).long()
        linked &= real[:, None] & real[None, :] & ~torch.eye(len(pos), dtype=torch.bool, device=pos.device)
        scale = degree.clamp_min(1).float().rsqrt()
        out[row] = linked.float() * scale[:, None] * scale[None, :]
    return out


@register
@dataclass(frozen=True)
class GTP(EncoderMethod):
    """Drop the tokens with the lowest self x received attention; propagate ``alpha`` of them over a graph."""

    name: ClassVar[str] = "gtp"
    paper: ClassVar[Paper] = Paper(
        "Xu et al., 2024",
        "GTP-ViT: Efficient Vision Transformers via Graph-based Token Propagation",
        arxiv="2311.03035",
    )
    summary: ClassVar[str] = "drop low self x received attention tokens, propagate them to their graph neighbours"
    needs_qk = True
    propagates = True

    alpha: float = option(0.1, low=0.0)
    graph: Literal["spatial", "similarity"] = "spatial"
    neighbours: int = option(4, low=1)
    """Kept tokens each going token is linked to (``graph="similarity"`` only)."""
    proportional_attention: bool = False

    def plan(self, ctx: LayerContext) -> Plan:
        keep = topk_mask(
            mixed_attention_max(ctx.attention(), ctx.valid), ctx.keep, valid=ctx.valid, protected=ctx.protected
        )
        going = ctx.valid & ~keep
        if self.graph == "spatial":
            if ctx.positions is None or ctx.reducible is None:
                raise ModelError("gtp's spatial graph needs the tokens' input positions (run it through the patch)")
            weights = spatial_graph(ctx.positions, ctx.reducible)
        else:
            weights = self._similarity_graph(ctx, keep, going)
        return Plan(drop_target(keep), spread=self.alpha * weights * keep[:, :, None] * going[:, None, :])

    def _similarity_graph(self, ctx: LayerContext, keep: Tensor, going: Tensor) -> Tensor:
        similarity = cosine_similarity_matrix(ctx.key_metric())  # [B, N, N]
        # each going token (column) linked to its most similar kept tokens (rows)
        links = similarity.masked_fill(~keep[:, :, None] | ~going[:, None, :], float("-inf"))
        top = links.topk(min(self.neighbours, similarity.shape[-1]), dim=1)
        graph = torch.zeros_like(similarity).scatter_(1, top.indices, top.values.clamp_min(0).nan_to_num(0.0))
        graph = torch.where(torch.isfinite(graph), graph, 0.0)
        return graph / graph.sum(dim=1, keepdim=True).clamp_min(1e-12)
