"""The selective loss: per-token statistics -> a policy's selection -> the mean loss of the selected tokens.

Two ways to use it:

* :class:`SelectiveLoss` is a drop-in for ``transformers.Trainer(compute_loss_func=...)`` (signature
  ``(outputs, labels, num_items_in_batch=None)``) and for a plain loop (``loss_fn(logits, labels)``). The
  model's forward runs over every token and backward goes through every position: the selection changes
  *which tokens teach*, exactly as in the papers, not what backward costs (only the LM head's share).
* :func:`sparse_step` (in :mod:`tokensift.training.sparse`) also cuts backward compute: the tokens left out
  are read as constant context, so forward-with-grad and backward run over the selected positions only.

Both count what they did: tokens with a label, tokens whose loss was kept, positions back-propagated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from tokensift.errors import ParameterError
from tokensift.training.methods.base import TokenPolicy
from tokensift.training.stats import TokenStats, token_losses, token_stats


@dataclass
class Counts:
    """Running totals: ``labelled`` tokens seen, ``selected`` (loss kept), ``backward`` positions back-propagated."""

    labelled: int = 0
    selected: int = 0
    backward: int = 0
    steps: int = 0

    def add(self, labelled: int, selected: int, backward: int) -> None:
        self.labelled += labelled
        self.selected += selected
        self.backward += backward
        self.steps += 1

    @property
    def selected_fraction(self) -> float:
        return self.selected / self.labelled if self.labelled else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "selected_fraction": self.selected_fraction}


def masked_mean(losses: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``losses`` over ``mask`` (0 with a graph when nothing is selected, so backward still runs)."""
    count = mask.sum()
    return (losses * mask).sum() / count.clamp(min=1)


@dataclass
class SelectiveLoss:
    """A policy as a loss function; ``counts`` says how many tokens it kept.

    ``reference`` — for a policy that needs one (``rho1``) — gives the reference model's per-token loss of
    the same batch: a callable ``reference(labels) -> [B, T-1]`` (see
    :class:`tokensift.training.reference.Reference`, which also needs the batch's inputs, so with ``Trainer``
    use :class:`tokensift.training.trainer.SelectiveTrainer`).
    """

    policy: TokenPolicy
    reference: Any = None
    counts: Counts = field(default_factory=Counts)
    last_mask: Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.policy, TokenPolicy):
            raise ParameterError(f"{self.policy!r} is not a token selection policy", option="policy")

    def __call__(self, outputs: Any, labels: Tensor, num_items_in_batch: Any = None, **batch: Any) -> Tensor:
        logits = outputs if isinstance(outputs, Tensor) else outputs["logits"]
        reference = None
        if self.policy.needs_reference:
            if self.reference is None:
                raise ParameterError(
                    f"{self.policy.name} needs a reference model: SelectiveLoss(policy, reference=Reference(model))",
                    option="reference",
                )
            reference = self.reference(labels, **batch)
        stats = token_stats(logits, labels, reference)
        mask = self.policy.select(stats)
        losses, _ = token_losses(logits, labels)
        self.last_mask = mask
        self.counts.add(stats.count, int(mask.sum()), int(labels.numel()))
        return masked_mean(losses, mask)

    def select(self, stats: TokenStats) -> Tensor:
        return self.policy.select(stats)


def full_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """The plain causal-LM loss (mean over labelled tokens), the same value transformers computes."""
    losses, valid = token_losses(logits, labels)
    return masked_mean(losses, valid)


def tokens_of(mask: Tensor) -> list[list[int]]:
    """Per row, the predicted token positions (``t + 1``) whose loss the mask keeps."""
    return [[int(t) + 1 for t in torch.nonzero(row).flatten()] for row in mask]
