"""Per-token statistics of a causal LM batch: the loss and predictive entropy of every predicted token.

Hugging Face's convention: ``labels`` is aligned with ``input_ids`` and ``-100`` marks tokens that are not
trained (prompt, padding); ``logits[:, t]`` predicts ``labels[:, t + 1]``. Everything here is over the
*predictions*: shape ``[B, T - 1]``, prediction ``t`` scores token ``t + 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

IGNORE = -100
"""The label that marks a token as not trained (transformers' ``ignore_index``)."""


@dataclass
class TokenStats:
    """Per-prediction ``loss`` (negative log-likelihood, nats) and ``entropy``, and ``valid`` (trained at all).

    ``reference`` holds a reference model's loss on the same tokens when a policy needs one (Rho-1).
    All are ``[B, T - 1]``; invalid entries are 0.
    """

    loss: Tensor
    entropy: Tensor
    valid: Tensor
    reference: Tensor | None = None

    @property
    def count(self) -> int:
        """Tokens that carry a label."""
        return int(self.valid.sum())


def shifted_labels(labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(targets, valid)`` for predictions ``0 .. T-2``: the next token's label (0 where ignored)."""
    targets = labels[:, 1:]
    valid = targets != IGNORE
    return torch.where(valid, targets, torch.zeros_like(targets)), valid


def token_losses(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Per-prediction cross-entropy ``[B, T-1]`` (0 where ignored) and the valid mask; keeps the graph."""
    if logits.dim() != 3 or labels.dim() != 2 or logits.shape[:2] != labels.shape:
        raise ValueError(
            f"expected logits [B, T, V] and labels [B, T], got {tuple(logits.shape)}, {tuple(labels.shape)}"
        )
    targets, valid = shifted_labels(labels)
    flat = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    loss = torch.nn.functional.cross_entropy(flat, targets.reshape(-1), reduction="none").view(targets.shape)
    return loss * valid, valid


@torch.no_grad()
def token_stats(logits: Tensor, labels: Tensor, reference: Tensor | None = None) -> TokenStats:
    """Detached per-prediction loss and entropy of a batch (what the selection policies read)."""
    loss, valid = token_losses(logits.detach(), labels)
    logp = torch.log_softmax(logits[:, :-1].detach().float(), dim=-1)
    entropy = -(logp.exp() * logp).sum(-1) * valid
    return TokenStats(loss, entropy, valid, reference)
