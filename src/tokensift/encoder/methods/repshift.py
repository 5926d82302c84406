"""Representation Shift: Choi et al., 2025, "Representation Shift: Unifying Token Compression with
FlashAttention" (ICCV).

Keep the tokens the block changed most (L2 distance between the block's input and output); needs no
attention weights, so attention keeps running in the fused SDPA kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokensift.encoder.methods.base import LayerContext, Plan
from tokensift.reduce.merge import drop_target
from tokensift.scores.shift import representation_shift
from tokensift.select.rowwise import topk_mask


@dataclass(frozen=True)
class RepShift:
    """Top-k by representation shift; the rest are dropped."""

    proportional_attention: bool = False
    needs_qk: bool = False

    def plan(self, ctx: LayerContext) -> Plan:
        shift = representation_shift(ctx.before, ctx.states)
        return Plan(drop_target(topk_mask(shift, ctx.keep, valid=ctx.valid, protected=ctx.protected)))
