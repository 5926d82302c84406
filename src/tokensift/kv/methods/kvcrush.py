"""KVCrush: part of the budget goes to representatives of the tokens the importance ranking would drop.

Jha et al., 2025, "KVCrush: Key Value Cache size-reduction using similarity in head-behaviour"
(arXiv:2503.00022). Each token gets a binary vector over the layer's heads (1 where the head attends to it
more than its mean), the cheap signature of how the heads treat it. The wrapped press keeps its top tokens
with ``1 - share`` of the budget; the tokens it would drop are sorted by the Hamming distance of their
signature to an anchor, cut into ``share * k`` equal buckets and each bucket keeps one token (its best by
score), so every kind of head behaviour keeps a representative instead of vanishing. Differences from the
paper: the signature is over KV heads (the scores are per KV head; SmolLM2 has 3) and the anchor is the
rounded mean signature of the dropped tokens (the paper also tries random and alternating anchors).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from tokensift.kv.methods.h2o import H2O
from tokensift.kv.press import Press, Wrapper
from tokensift.kv.view import LayerView, Selection
from tokensift.registry import Paper, option, register


def representatives(scores: Tensor, signatures: Tensor, candidates: Tensor, count: int) -> Tensor:
    """``count`` of ``candidates`` (positions), one per bucket of Hamming distance to the anchor, the best by
    ``scores [T]`` in each; ``signatures [T, H]`` are 0/1."""
    if count <= 0 or candidates.numel() == 0:
        return candidates[:0]
    if candidates.numel() <= count:
        return candidates
    sig = signatures[candidates].float()
    anchor = sig.mean(0).round()
    distance = (sig - anchor).abs().sum(-1)
    by_score = torch.argsort(scores[candidates], descending=True, stable=True)
    order = by_score[torch.argsort(distance[by_score], stable=True)]  # by distance, then by score
    buckets = torch.tensor_split(order, count)
    best = torch.stack([bucket[0] for bucket in buckets])  # each bucket is sorted by distance, then score
    return candidates[best]


@register
@dataclass
class KVCrush(Wrapper):
    """``share`` of each head's budget goes to representatives of the wrapped press's dropped tokens."""

    name: ClassVar[str] = "kvcrush"
    paper: ClassVar[Paper] = Paper(
        "Jha et al., 2025",
        "KVCrush: Key Value Cache size-reduction using similarity in head-behaviour",
        arxiv="2503.00022",
    )
    summary: ClassVar[str] = "budget share for representatives of dropped tokens (head-behaviour buckets)"

    press: Press = field(default_factory=H2O)
    share: float = option(0.25, low=0.0, high=1.0)

    def select(self, view: LayerView, scores: Tensor, k: int) -> Selection:
        count = min(k, round(self.share * k))
        main = self.press.select(view, scores, k - count)
        signatures = (scores > scores.mean(-1, keepdim=True)).T  # [T, Hkv]
        chosen = []
        for h, kept in enumerate(main):
            dropped = torch.ones(view.n, dtype=torch.bool, device=scores.device)
            dropped[kept] = False
            extra = representatives(scores[h], signatures, dropped.nonzero().squeeze(-1), count)
            chosen.append(torch.sort(torch.cat([kept, extra])).values)
        return chosen
