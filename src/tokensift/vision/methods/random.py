"""The random baseline ("All you need are random visual tokens?", Wen et al., 2025, arXiv:2505.14467 finds it
hard to beat at light pruning)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from tokensift.reduce.merge import drop_target
from tokensift.registry import register
from tokensift.select.rowwise import topk_mask
from tokensift.vision.methods.base import Plan, VisionContext, VisionMethod


@register
@dataclass(frozen=True)
class RandomVisual(VisionMethod):
    """Keep uniformly random visual tokens, reproducible from ``seed``. The draw is over grid positions, the same for
    every image, so a row keeps the same patches alone or in any batch."""

    name: ClassVar[str] = "random"
    summary: ClassVar[str] = "keep uniformly random visual tokens under the same budget"

    seed: int = 0

    def plan(self, ctx: VisionContext) -> Plan:
        generator = torch.Generator().manual_seed(self.seed)
        scores = torch.rand(ctx.features.shape[1], generator=generator).to(ctx.features.device)
        return Plan(drop_target(topk_mask(scores.expand(ctx.features.shape[:2]), ctx.keep, valid=ctx.valid)))
