"""FastV: Chen et al., 2024, "An Image is Worth 1/2 Tokens After Layer 2: Plug-and-Play Inference Acceleration
for Large Vision-Language Models" (ECCV, arXiv:2403.06764).

Inside the language model: after layer ``layer`` (K = 2 in the paper) the image tokens that receive the least
attention (averaged over heads and over every query that can see them) are dropped, so the layers after K and
the decoding steps only ever see the rest. Run by :mod:`tokensift.vision.fastv` through hooks; the first K + 1
layers' caches are cut to the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tokensift.errors import ModelError
from tokensift.registry import Paper, option, register
from tokensift.vision.methods.base import Plan, VisionContext, VisionMethod


@register
@dataclass(frozen=True)
class FastV(VisionMethod):
    """Drop the least-attended image tokens after LLM layer ``layer``."""

    name: ClassVar[str] = "fastv"
    paper: ClassVar[Paper] = Paper(
        "Chen et al., 2024",
        "An Image is Worth 1/2 Tokens After Layer 2: Plug-and-Play Inference Acceleration for Large "
        "Vision-Language Models",
        arxiv="2403.06764",
    )
    summary: ClassVar[str] = "inside the LLM: drop the image tokens least attended at layer K (K = 2)"
    stage = "llm"

    layer: int = option(2, low=0)

    def plan(self, ctx: VisionContext) -> Plan:
        raise ModelError("fastv acts inside the language model; use tokensift.vision.answer / prepare")
