"""Representation Shift: Choi et al., 2025, "Representation Shift: Unifying Token Compression with
FlashAttention" (ICCV, arXiv:2508.00367).

Keep the tokens the block changed most (L2 distance between the block's input and output); needs no
attention weights, so attention keeps running in the fused SDPA kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tokensift.encoder.methods.base import EncoderMethod, LayerContext, Plan
from tokensift.reduce.merge import drop_target
from tokensift.registry import Paper, register
from tokensift.scores.shift import representation_shift
from tokensift.select.rowwise import topk_mask


@register
@dataclass(frozen=True)
class RepShift(EncoderMethod):
    """Top-k by representation shift; the rest are dropped."""

    name: ClassVar[str] = "repshift"
    paper: ClassVar[Paper] = Paper(
        "Choi et al., 2025", "Representation Shift: Unifying Token Compression with FlashAttention", arxiv="2508.00367"
    )
    summary: ClassVar[str] = "keep the tokens the block changed most (no attention weights needed)"

    proportional_attention: bool = False

    def plan(self, ctx: LayerContext) -> Plan:
        shift = representation_shift(ctx.before, ctx.states)
        return Plan(drop_target(topk_mask(shift, ctx.keep, valid=ctx.valid, protected=ctx.protected)))
