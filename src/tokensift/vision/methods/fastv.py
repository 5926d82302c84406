"""FastV: Chen et al., 2024, "An Image is Worth 1/2 Tokens After Layer 2: Plug-and-Play Inference Acceleration
for Large Vision-Language Models" (ECCV, arXiv:2403.06764).

Inside the language model: the first ``layer`` decoder layers (K = 2 in the paper: "after layer 2") see every
image token; the image tokens that receive the least attention in layer K are dropped, so layers K + 1 onwards
and the decoding steps only ever see the rest. Run by :mod:`tokensift.vision.fastv` through hooks; the first K
layers' caches are cut to the same tokens.

The attention is averaged over heads. ``query="last"`` (default) reads the prompt's last token's row, as the
authors' code does (arXiv:2403.06764's reference implementation: ``last_layer_attention_avg_last_tok``);
``query="all"`` averages every query that can see the token, as the paper's text describes it ("the average
attention score one token received from all other tokens"). Selections equal the reference's on the same
attention (``tests/vision/test_pipeline.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

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
    summary: ClassVar[str] = "inside the LLM: after K layers (K = 2) drop the image tokens the last token attends least"
    stage = "llm"

    layer: int = option(2, low=1)
    """K: decoder layers that see every image token (scores from the K-th)."""
    query: Literal["last", "all"] = "last"
    """Whose attention scores the image tokens: the prompt's last token, or every query that sees them."""

    def plan(self, ctx: VisionContext) -> Plan:
        raise ModelError("fastv acts inside the language model; use tokensift.vision.answer / prepare")
