"""HiPrune: Liu et al., 2025, "HiPrune: Training-Free Visual Token Pruning via Hierarchical Attention in Vision
Encoders" (arXiv:2508.00553).

Different layers of a vision encoder attend differently: middle layers to objects, deep layers to a few global
summary tokens. Keep *anchors* (the patches most attended in a middle layer, mean attention received from every
token), their four grid neighbours as *buffers* (spatial continuity), and fill the rest of the budget with
*registers* (the patches the deep layer's [CLS] attends to most). The split (``anchors`` share of the budget,
buffers up to four per anchor) and the middle layer (half the depth) are our choices where the abstract gives
none.
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
    """Middle-layer anchors + their grid neighbours + deep-layer [CLS] registers."""

    name: ClassVar[str] = "hiprune"
    paper: ClassVar[Paper] = Paper(
        "Liu et al., 2025",
        "HiPrune: Training-Free Visual Token Pruning via Hierarchical Attention in Vision Encoders",
        arxiv="2508.00553",
    )
    summary: ClassVar[str] = "middle-layer anchors with their neighbours, deep-layer [CLS] registers for the rest"
    needs_tower = True

    anchors: float = option(0.1, low=0.0, high=1.0)
    middle: int | None = option(None, low=0)

    def _middle(self, n_layers: int) -> int:
        return min(n_layers - 1, self.middle if self.middle is not None else n_layers // 2)

    def signal_layers(self, n_layers: int, feature_layer: int) -> list[int]:
        return sorted({self._middle(n_layers), feature_layer})

    def plan(self, ctx: VisionContext) -> Plan:
        batch, n = ctx.features.shape[:2]
        rows, cols = ctx.grid
        keep = ctx.keep.clamp(0, n)
        n_anchor = (keep.float() * self.anchors).ceil().long().clamp_max(keep)
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
        # the buffers the budget allows, most attended (middle layer) first
        selected |= topk_mask(
            middle.masked_fill(~buffers, float("-inf")), room.clamp_max(buffers.sum(1)), valid=buffers
        )
        rest = keep - selected.sum(dim=1)
        registers = topk_mask(ctx.cls().masked_fill(selected, float("-inf")), rest, valid=~selected)
        return Plan(drop_target(selected | registers))
