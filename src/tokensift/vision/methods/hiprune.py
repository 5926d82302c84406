"""HiPrune: Liu et al., 2025, "HiPrune: Training-Free Visual Token Pruning via Hierarchical Attention in Vision
Encoders" (arXiv:2508.00553).

Different layers of a vision encoder attend differently: middle ("object") layers to objects, deep layers to a
few global summary tokens. Keep *anchors* (the patches most attended in the object layer: mean attention
received over heads and every query), their four grid neighbours as *buffers* (spatial continuity), and fill the
rest of the budget with *registers* (the patches most attended in the feature layer, same measure).

As the authors' code sets it: ``alpha`` (0.1) is the share of the budget for anchors with their buffers, so
``round(keep * alpha / 5)`` anchors; the object layer is the 9th of CLIP-L's 24 (3/8 of the depth: layer 4 of
DINOv2-small's 12, 0-based). Selections equal that code on the same attention (tested), with one difference:
their left/right neighbours are the flat index ± 1, which wraps to the previous or next grid row at the image's
edges; ours stay in the row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from tokensift.reduce.merge import drop_target
from tokensift.registry import Paper, option, register
from tokensift.select.rowwise import topk_mask
from tokensift.vision.methods.base import Plan, VisionContext, VisionMethod


@register
@dataclass(frozen=True)
class HiPrune(VisionMethod):
    """Object-layer anchors + their grid neighbours + feature-layer registers (attention received)."""

    name: ClassVar[str] = "hiprune"
    paper: ClassVar[Paper] = Paper(
        "Liu et al., 2025",
        "HiPrune: Training-Free Visual Token Pruning via Hierarchical Attention in Vision Encoders",
        arxiv="2508.00553",
    )
    summary: ClassVar[str] = "object-layer anchors with their neighbours, feature-layer registers for the rest"
    needs_tower = True

    alpha: float = option(0.1, low=0.0, high=1.0)
    """Share of the budget for anchors and their buffers (each anchor brings up to four)."""
    middle: int | None = option(None, low=0)
    """The object layer (0-based; default 3/8 of the depth, the authors' 9 of 24)."""

    def _middle(self, n_layers: int) -> int:
        if self.middle is not None:
            return min(n_layers - 1, self.middle)
        return max(0, int(n_layers * 9 / 24 + 0.5) - 1)

    def signal_layers(self, n_layers: int, feature_layer: int) -> list[int]:
        return sorted({self._middle(n_layers), feature_layer})

    def plan(self, ctx: VisionContext) -> Plan:
        batch, n = ctx.features.shape[:2]
        rows, cols = ctx.grid
        keep = ctx.keep.clamp(0, n)
        n_anchor = torch.round(keep.float() * self.alpha / 5).long().clamp_max(keep)
        middle = ctx.received[self._middle(ctx.n_layers)]
        selected = topk_mask(middle, n_anchor, valid=ctx.valid)
        grid = selected.view(batch, rows, cols)
        near = torch.zeros_like(grid)
        near[:, 1:] |= grid[:, :-1]
        near[:, :-1] |= grid[:, 1:]
        near[:, :, 1:] |= grid[:, :, :-1]
        near[:, :, :-1] |= grid[:, :, 1:]
        buffers = near.view(batch, n) & ~selected
        room = keep - n_anchor
        # every buffer when the budget allows (always at the default alpha), else the most attended first
        selected |= topk_mask(
            middle.masked_fill(~buffers, float("-inf")), room.clamp_max(buffers.sum(1)), valid=buffers
        )
        rest = keep - selected.sum(dim=1)
        deep = ctx.received[ctx.feature_layer]
        registers = topk_mask(deep.masked_fill(selected, float("-inf")), rest, valid=~selected)
        return Plan(drop_target(selected | registers))
