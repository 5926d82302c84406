"""``entropy_topk``: train only on the forking tokens — the predictions the model is most uncertain about.

Wang et al., 2025, "Beyond the 80/20 Rule: High-Entropy Minority Tokens Drive Effective Reinforcement
Learning for LLM Reasoning" (arXiv:2506.01939) restrict the policy gradient to the top 20 % of tokens by
predictive entropy. Here the same choice is made for the supervised loss: the top ``keep`` of a batch's
tokens by entropy. Unlike ``eslm`` with ``score="entropy"``, the default budget is the paper's 20 %.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from tokensift.registry import Paper, register
from tokensift.training.methods.base import TokenPolicy
from tokensift.training.stats import TokenStats


@register
@dataclass
class EntropyTopK(TokenPolicy):
    """Top-``keep`` predictive entropy per batch."""

    name: ClassVar[str] = "entropy_topk"
    paper: ClassVar[Paper] = Paper(
        "Wang et al., 2025",
        "Beyond the 80/20 Rule: High-Entropy Minority Tokens Drive Effective Reinforcement Learning for LLM Reasoning",
        arxiv="2506.01939",
    )
    summary: ClassVar[str] = "keep the tokens with the highest predictive entropy"
    default_keep: ClassVar[float] = 0.2
    in_default_bench: ClassVar[bool] = False  # a reinforcement-learning selection; run it with --methods

    ratio: float | None = None
    keep: float | None = None
    keep_tokens: int | None = None

    def scores(self, stats: TokenStats) -> Tensor:
        return stats.entropy
