"""VisionZip: Yang et al., 2025, "VisionZip: Longer is Better but Not Necessary in Vision Language Models"
(CVPR, arXiv:2412.04467).

Dominant tokens: the patches the vision tower's [CLS] attends to most (summed over heads, at the feature
layer). Contextual tokens: of the rest, evenly spaced ones become merge targets and every other remaining patch
is averaged into the target whose key it is most similar to, so nothing of the image is dropped outright. The
split is the paper's 54 dominant + 10 contextual of 64 (``dominant = 54 / 64`` of the budget).

Kept patches and merge targets equal the authors' code on the same attention and keys (tested). One difference:
their contextual token is the target *plus* the mean of the patches assigned to it; ours is the average of the
target and those patches, so a merged token stays on the scale of a single patch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch.nn import functional as F

from tokensift.registry import Paper, option, register
from tokensift.select.rowwise import topk_mask
from tokensift.vision.methods.base import Plan, VisionContext, VisionMethod


@register
@dataclass(frozen=True)
class VisionZip(VisionMethod):
    """[CLS]-dominant tokens + contextual tokens merged by key similarity."""

    name: ClassVar[str] = "visionzip"
    paper: ClassVar[Paper] = Paper(
        "Yang et al., 2025",
        "VisionZip: Longer is Better but Not Necessary in Vision Language Models",
        arxiv="2412.04467",
    )
    summary: ClassVar[str] = "keep [CLS]-dominant patches, merge the rest into a few contextual tokens"
    needs_tower = True
    merges = True

    dominant: float = option(54 / 64, low=0.0, high=1.0)

    def plan(self, ctx: VisionContext) -> Plan:
        batch, n = ctx.features.shape[:2]
        keep = ctx.keep.clamp(0, n)
        contextual = torch.where(keep >= 2, (keep - (keep.float() * self.dominant).round().long()).clamp_min(1), 0)
        dominant = topk_mask(ctx.cls(), keep - contextual, valid=ctx.valid)
        keys = F.normalize(ctx.key_metric().float(), dim=-1)
        positions = torch.arange(n, device=ctx.features.device)
        target = positions.expand(batch, n).clone()
        for row in range(batch):
            rest = positions[~dominant[row]]
            c = int(contextual[row])
            if c == 0:
                target[row, rest] = -1
                continue
            step = max(1, rest.numel() // c)
            hubs = rest[::step][:c]
            others = rest[~torch.isin(rest, hubs)]
            nearest = (keys[row, others] @ keys[row, hubs].T).argmax(dim=-1)
            target[row, others] = hubs[nearest]
        return Plan(target, weights=torch.ones(batch, n, device=ctx.features.device))
