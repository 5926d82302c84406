"""EViT: Liang et al., 2022, "Not All Patches are What You Need: Expediting Vision Transformers via
Token Reorganizations" (ICLR).

Keep the tokens the [CLS] token attends to most; fuse the inattentive rest into one token, their
average weighted by that attention. The fused token takes the position of its first member.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokensift.encoder.methods.base import LayerContext, Plan
from tokensift.select.rowwise import topk_mask


@dataclass(frozen=True)
class EViT:
    """[CLS]-attention top-k with one fused token for the rest."""

    fuse: bool = True
    proportional_attention: bool = False
    needs_qk: bool = True

    def plan(self, ctx: LayerContext) -> Plan:
        attention = ctx.cls_attention()
        reducing = ctx.remove > 0
        attentive = topk_mask(
            attention, ctx.keep - (reducing & self.fuse).long(), valid=ctx.valid, protected=ctx.protected
        )
        positions = torch.arange(attention.shape[1], device=attention.device).expand_as(attention)
        inattentive = ctx.valid & ~attentive & reducing[:, None]
        first = torch.where(inattentive, positions, attention.shape[1]).amin(dim=1, keepdim=True)
        fused = first.expand_as(positions) if self.fuse else torch.full_like(positions, -1)
        target = torch.where(inattentive, fused, positions)
        return Plan(target, weights=attention)
