"""PiToMe: Tran et al., 2024, "Accelerating Transformers with Spectrum-Preserving Token Merging" (NeurIPS).

An energy score marks redundant tokens (many similar neighbours); only the ``2r`` highest-energy tokens
are matched and merged, so isolated, informative tokens are protected. The margin of the energy
function falls linearly with depth (the authors' text setting: 0.9 at the first layer, 0.25 lower at
the last).
"""

from __future__ import annotations

from dataclasses import dataclass

from tokensift.encoder.methods.base import LayerContext, Plan
from tokensift.scores.redundancy import energy_score
from tokensift.select.matching import energy_matching


@dataclass(frozen=True)
class PiToMe:
    """Energy-protected bipartite merging."""

    margin: float = 0.9
    margin_drop: float = 0.25
    alpha: float = 1.0
    proportional_attention: bool = True
    needs_qk: bool = True

    def plan(self, ctx: LayerContext) -> Plan:
        metric = ctx.key_metric()
        margin = self.margin - self.margin_drop * ctx.layer / ctx.n_layers
        energy = energy_score(metric, valid=ctx.valid, margin=margin, alpha=self.alpha)
        return Plan(energy_matching(metric, energy, ctx.remove, valid=ctx.valid, protected=ctx.protected))
