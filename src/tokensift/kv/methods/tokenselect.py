"""TokenSelect: every decoding step attends only to the cached tokens its query heads vote for.

Wu et al., 2024, "TokenSelect: Efficient Long-Context Inference and Length Extrapolation for LLMs via
Dynamic Token-Level KV Cache Selection" (arXiv:2411.02886; EMNLP 2025): per step and layer, each query head's
dot products with the cached keys are turned into a softmax (so no single head's scale dominates) and the
heads vote by summing them; the ``k`` tokens with the most votes are attended, the rest skipped. Here the
heads of one KV head's group vote for that KV head's tokens (one group per layer on a one-KV-head model such
as Gemma-3-270M). The paper's selection cache (reusing a step's pick when consecutive queries are alike)
and paged kernel are not reproduced: the selection is recomputed every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from tokensift.kv.sparse import DecodeState, SparseDecode, group_logits, top_positions
from tokensift.registry import Paper, register


@register
@dataclass
class TokenSelect(SparseDecode):
    """Per step and layer: softmax per query head, summed over the group, top ``k`` cached tokens attended."""

    name: ClassVar[str] = "tokenselect"
    paper: ClassVar[Paper] = Paper(
        "Wu et al., 2024",
        "TokenSelect: Efficient Long-Context Inference and Length Extrapolation for LLMs via Dynamic Token-Level "
        "KV Cache Selection",
        arxiv="2411.02886",
    )
    summary: ClassVar[str] = "per decoding step, the heads' soft votes pick the cached tokens attended"

    def positions(
        self, state: DecodeState, layer: int, query: Tensor, keys: Tensor, scaling: float, allowed: Tensor | None
    ) -> Tensor | None:
        votes = group_logits(query, keys, scaling, allowed).softmax(-1).sum(2)
        return top_positions(votes, self.budget_for(keys.shape[2]))
