"""MCTF: Lee et al., 2024, "Multi-criteria Token Fusion with One-step-ahead Attention for Efficient Vision
Transformers" (CVPR, arXiv:2403.10030).

Tokens attract each other by three criteria multiplied together: similarity ((cos + 1) / 2 of the tokens
themselves at the reduction point, as the authors' code measures it), informativeness (the inverse of the
attention a token receives: tokens nobody attends to fuse first) and size (small tokens fuse first), each raised
to ``1 / tau``. Matching is bipartite in both directions; fused tokens are averaged with weights attention x
size. Defaults: the release's DeiT setting (tau 1 / 20 / 40, bidirectional, attention x size pooling).

One-step-ahead attention (``one_step_ahead``, on by default as in the release's evaluation scripts): the attention
that decides is the one of the layer the tokens are about to enter — its queries and keys computed from the
unreduced tokens through that layer's own norm and projections — and that layer then attends over the fused
tokens afresh (the release's "precise" variant, ``one_step_ahead=2``; its variant 1 reuses a fused copy of the
attention map to save the second product). This needs a reduction between layers: on ViT, DINOv2 and CLIP
vision towers; BERT-family encoders reduce inside a layer, before its MLP, where no attention comes next, so
there (and after the last layer) the current layer's attention decides, as with ``one_step_ahead=False`` (the
release's variant 0). Fusions equal the release's matching written out (tested). Not built: the training-time
token-reduction consistency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from tokensift.encoder.methods.base import EncoderMethod, LayerContext, Plan
from tokensift.registry import Paper, register
from tokensift.select.matching import bidirectional_matching, cosine_similarity_matrix


def _inverse_normalised(values: Tensor, valid: Tensor) -> Tensor:
    """``1 / values`` scaled so each row's largest (over real tokens) is 1."""
    inverse = torch.where(valid, 1.0 / values.float().clamp_min(1e-12), 0.0)
    return inverse / inverse.amax(dim=-1, keepdim=True).clamp_min(1e-12)


@register
@dataclass(frozen=True)
class MCTF(EncoderMethod):
    """Fuse token pairs by similarity x informativeness x size, both ways."""

    name: ClassVar[str] = "mctf"
    paper: ClassVar[Paper] = Paper(
        "Lee et al., 2024",
        "Multi-criteria Token Fusion with One-step-ahead Attention for Efficient Vision Transformers",
        arxiv="2403.10030",
    )
    summary: ClassVar[str] = "fuse pairs by similarity x low attention x small size, bidirectional matching"
    needs_qk = True
    merges = True

    tau_sim: float = 1.0
    tau_info: float = 20.0
    tau_size: float = 40.0
    one_step_ahead: bool = True
    """Decide with the next layer's attention over the unreduced tokens (ViT family); False: this layer's."""
    proportional_attention: bool = True

    def plan(self, ctx: LayerContext) -> Plan:
        attention = ctx.attention().mean(dim=1)  # [B, N (queries), N (keys)]
        real = ctx.valid.float()[:, :, None]
        received = (attention * real).sum(dim=1) / real.sum(dim=1).clamp_min(1)
        similarity = (cosine_similarity_matrix(ctx.states.float()) + 1) / 2
        info = _inverse_normalised(received, ctx.valid)
        size = _inverse_normalised(ctx.sizes, ctx.valid)
        scores = similarity.clamp_min(0) ** (1 / self.tau_sim)
        scores = scores * (info[:, :, None] * info[:, None, :]) ** (1 / self.tau_info)
        scores = scores * (size[:, :, None] * size[:, None, :]) ** (1 / self.tau_size)
        target = bidirectional_matching(scores, ctx.remove, valid=ctx.valid, protected=ctx.protected)
        return Plan(target, weights=received * ctx.sizes)
