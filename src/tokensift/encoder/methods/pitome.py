"""PiToMe: Tran et al., 2024, "Accelerating Transformers with Spectrum-Preserving Token Merging"
(NeurIPS, arXiv:2405.16148).

An energy score marks redundant tokens (many similar neighbours); only the ``2r`` highest-energy tokens
are matched and merged, so isolated, informative tokens are protected. The margin of the energy
function falls linearly with depth (the authors' text setting: 0.9 at the first layer, 0.25 lower at
the last).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tokensift.encoder.methods.base import EncoderMethod, LayerContext, Plan
from tokensift.registry import Paper, register
from tokensift.scores.redundancy import energy_score
from tokensift.select.matching import energy_matching


@register
@dataclass(frozen=True)
class PiToMe(EncoderMethod):
    """Energy-protected bipartite merging."""

    name: ClassVar[str] = "pitome"
    paper: ClassVar[Paper] = Paper(
        "Tran et al., 2024", "Accelerating Transformers with Spectrum-Preserving Token Merging", arxiv="2405.16148"
    )
    summary: ClassVar[str] = "merge only high-energy (redundant) tokens; isolated tokens are protected"
    needs_qk = True
    merges = True

    margin: float = 0.9
    margin_drop: float = 0.25
    alpha: float = 1.0
    proportional_attention: bool = True

    def plan(self, ctx: LayerContext) -> Plan:
        metric = ctx.key_metric()
        margin = self.margin - self.margin_drop * ctx.layer / ctx.n_layers
        energy = energy_score(metric, valid=ctx.valid, margin=margin, alpha=self.alpha)
        return Plan(energy_matching(metric, energy, ctx.remove, valid=ctx.valid, protected=ctx.protected))
