"""``SelectiveTrainer``: transformers' ``Trainer`` with a token selection policy, Rho-1's reference included.

``Trainer(compute_loss_func=SelectiveLoss(policy))`` works for every policy that reads only the batch's own
logits (``eslm``, ``entropy_topk``, ``random``, ``none``); ``compute_loss_func`` never sees the inputs, so a
reference model cannot run there. This subclass passes them, which is all Rho-1 needs. The tokens kept are
counted in ``trainer.selective.counts``.
"""

from __future__ import annotations

from typing import Any

from transformers import Trainer

from tokensift.training.loss import SelectiveLoss
from tokensift.training.methods.base import TokenPolicy
from tokensift.training.reference import Reference


class SelectiveTrainer(Trainer):
    """``SelectiveTrainer(model, args, train_dataset=..., policy=Rho1(keep=0.6), reference_model=frozen_copy)``."""

    def __init__(self, *args: Any, policy: TokenPolicy, reference_model: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        reference = Reference(reference_model.eval()) if reference_model is not None else None
        self.selective = SelectiveLoss(policy, reference=reference)

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = self.selective(
            outputs, labels, input_ids=inputs.get("input_ids"), attention_mask=inputs.get("attention_mask")
        )
        return (loss, outputs) if return_outputs else loss
