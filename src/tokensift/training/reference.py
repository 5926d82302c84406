"""A reference model's per-token losses for Rho-1's excess loss, computed once per distinct example.

Rho-1 scores a token by how much worse the model being trained does on it than a reference model. The
reference is frozen, so its loss on an example never changes: :class:`Reference` computes it on first use
(no gradients) and remembers it by the example's token ids, so epochs and runs that share the object pay once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from tokensift.errors import ParameterError
from tokensift.training.stats import token_losses


@dataclass
class Reference:
    """``Reference(model)(labels, input_ids=..., attention_mask=...) -> [B, T-1]`` reference losses."""

    model: Any
    remembered: dict[tuple[int, ...], Tensor] = field(default_factory=dict, repr=False)
    computed: int = 0
    """Rows the reference model actually ran on (the rest were remembered)."""

    def __call__(
        self, labels: Tensor, input_ids: Tensor | None = None, attention_mask: Tensor | None = None, **unused: Any
    ) -> Tensor:
        if input_ids is None:
            raise ParameterError("the reference model needs the batch's input_ids", option="reference")
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        keys = [
            (*ids[m.bool()].tolist(), -1, *lab[m.bool()].tolist())
            for ids, m, lab in zip(input_ids, mask, labels, strict=True)
        ]
        missing = [row for row, key in enumerate(keys) if key not in self.remembered]
        if missing:
            with torch.no_grad():
                logits = self.model(input_ids=input_ids[missing], attention_mask=mask[missing], use_cache=False).logits
                losses, _ = token_losses(logits, labels[missing])
            for row, loss in zip(missing, losses, strict=True):
                self.remembered[keys[row]] = loss
            self.computed += len(missing)
        width = labels.shape[1] - 1
        return torch.stack([_fit(self.remembered[key], width) for key in keys])


def _fit(losses: Tensor, width: int) -> Tensor:
    """A remembered row padded (zeros) or cut to this batch's width (padding carries no label)."""
    if losses.numel() >= width:
        return losses[:width]
    return torch.cat([losses, losses.new_zeros(width - losses.numel())])
