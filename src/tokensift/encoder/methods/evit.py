"""EViT: Liang et al., 2022, "Not All Patches are What You Need: Expediting Vision Transformers via
Token Reorganizations" (ICLR, arXiv:2202.07800).

Keep the tokens the [CLS] token attends to most; fuse the inattentive rest into one token, their
average weighted by that attention. The fused token takes the position of its first member.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from tokensift.encoder.methods.base import EncoderMethod, LayerContext, Plan
from tokensift.registry import Paper, register
from tokensift.select.rowwise import topk_mask


@register
@dataclass(frozen=True)
class EViT(EncoderMethod):
    """[CLS]-attention top-k with one fused token for the rest."""

    name: ClassVar[str] = "evit"
    paper: ClassVar[Paper] = Paper(
        "Liang et al., 2022",
        "Not All Patches are What You Need: Expediting Vision Transformers via Token Reorganizations",
        arxiv="2202.07800",
    )
    summary: ClassVar[str] = "keep the tokens [CLS] attends to most, fuse the rest into one token"
    needs_qk = True
    merges = True

    fuse: bool = True
    proportional_attention: bool = False

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
