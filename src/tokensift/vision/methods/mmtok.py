"""MMTok: Dong et al., 2025, "MMTok: Multimodal Coverage Maximization for Efficient Inference of VLMs"
(arXiv:2508.18264).

Choose the visual tokens that best *cover* both the question and the image: greedy maximisation of the
submodular coverage ``sum_t max_s sim(t, s) + alpha * sum_v max_s sim(v, s)`` over the question's token
embeddings ``t`` and all visual tokens ``v`` (cosine similarity in the language model's input space, shifted to
[0, 1]). Text-aware: the same image keeps different tokens for different questions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch.nn import functional as F

from tokensift.errors import ModelError
from tokensift.reduce.merge import drop_target
from tokensift.registry import Paper, option, register
from tokensift.vision.methods.base import Plan, VisionContext, VisionMethod


@register
@dataclass(frozen=True)
class MMTok(VisionMethod):
    """Greedy coverage of the question's tokens and of the image's tokens."""

    name: ClassVar[str] = "mmtok"
    paper: ClassVar[Paper] = Paper(
        "Dong et al., 2025",
        "MMTok: Multimodal Coverage Maximization for Efficient Inference of VLMs",
        arxiv="2508.18264",
    )
    summary: ClassVar[str] = "greedy coverage of the question's and the image's tokens (text-aware)"
    text_aware = True

    alpha: float = option(0.5, low=0.0)

    def plan(self, ctx: VisionContext) -> Plan:
        if ctx.text is None or ctx.text_mask is None:
            raise ModelError("mmtok needs the question's tokens")
        visual = F.normalize(ctx.projected.float(), dim=-1)
        text = F.normalize(ctx.text.float(), dim=-1)
        to_text = ((text @ visual.transpose(1, 2) + 1) / 2) * ctx.text_mask[:, :, None]  # [B, T, N]
        to_image = self.alpha * (visual @ visual.transpose(1, 2) + 1) / 2  # [B, N, N]
        targets = torch.cat([to_text, to_image], dim=1)  # [B, T + N, N]: how well token s covers target t
        batch, n = visual.shape[:2]
        covered = targets.new_zeros(batch, targets.shape[1])
        selected = torch.zeros(batch, n, dtype=torch.bool, device=visual.device)
        rows = torch.arange(batch, device=visual.device)
        for _ in range(int(ctx.keep.max().item()) if batch else 0):
            gain = (targets - covered[:, :, None]).clamp_min(0).sum(dim=1).masked_fill(selected, float("-inf"))
            pick = gain.argmax(dim=1)
            active = selected.sum(dim=1) < ctx.keep
            selected[rows[active], pick[active]] = True
            covered = torch.where(active[:, None], torch.maximum(covered, targets[rows, :, pick]), covered)
        return Plan(drop_target(selected))
