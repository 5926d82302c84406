"""FasterVLM: Zhang et al., 2024, "[CLS] Attention is All You Need for Training-Free Visual Token Pruning: Make
VLM Inference Faster" (arXiv:2412.01818).

The vision encoder's [CLS] token attends to what matters in the image; keep the patches it attends to most, at
the layer whose output feeds the projector, before the language model ever sees them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tokensift.reduce.merge import drop_target
from tokensift.registry import Paper, register
from tokensift.select.rowwise import topk_mask
from tokensift.vision.methods.base import Plan, VisionContext, VisionMethod


@register
@dataclass(frozen=True)
class FasterVLM(VisionMethod):
    """Top-k patches by the vision tower's [CLS] attention."""

    name: ClassVar[str] = "fastervlm"
    paper: ClassVar[Paper] = Paper(
        "Zhang et al., 2024",
        "[CLS] Attention is All You Need for Training-Free Visual Token Pruning: Make VLM Inference Faster",
        arxiv="2412.01818",
    )
    summary: ClassVar[str] = "keep the patches the vision encoder's [CLS] attends to most"
    needs_tower = True

    def plan(self, ctx: VisionContext) -> Plan:
        return Plan(drop_target(topk_mask(ctx.cls(), ctx.keep, valid=ctx.valid)))
