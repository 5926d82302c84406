"""The selective loss as a drop-in: a plain loop, ``Trainer(compute_loss_func=...)`` and ``SelectiveTrainer``
with Rho-1's reference model; the tokens kept are counted, and the reference runs once per distinct row."""

import pytest
import torch
from torch.utils.data import Dataset

from tests.conftest import tiny_llama
from tokensift.errors import ParameterError
from tokensift.methods import build
from tokensift.training import Reference, SelectiveLoss
from tokensift.training.stats import IGNORE, token_losses


class Rows(Dataset):
    def __init__(self, count=4, width=10):
        generator = torch.Generator().manual_seed(5)
        self.ids = torch.randint(2, 64, (count, width), generator=generator)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, index):
        ids = self.ids[index]
        labels = ids.clone()
        labels[:4] = IGNORE
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def test_plain_loop_loss_is_the_mean_over_the_kept_tokens():
    model = tiny_llama()
    row = Rows()[0]
    ids, labels = row["input_ids"][None], row["labels"][None]
    logits = model(input_ids=ids).logits
    loss_fn = SelectiveLoss(build("training", "eslm", keep=0.5))
    value = loss_fn(logits, labels)
    losses, valid = token_losses(logits.detach(), labels)
    top = torch.sort(losses[valid], descending=True).values[:3]
    assert float(value.detach()) == pytest.approx(float(top.mean()), rel=1e-6)
    assert loss_fn.counts.labelled == 6 and loss_fn.counts.selected == 3 and loss_fn.counts.backward == 10


def test_rho1_needs_a_reference_and_remembers_its_losses():
    model = tiny_llama()
    row = Rows()[0]
    ids, labels = row["input_ids"][None], row["labels"][None]
    with pytest.raises(ParameterError, match="reference"):
        SelectiveLoss(build("training", "rho1"))(model(input_ids=ids).logits, labels)
    reference = Reference(tiny_llama(seed=1))
    loss_fn = SelectiveLoss(build("training", "rho1", keep=0.5), reference=reference)
    for _ in range(3):
        loss_fn(model(input_ids=ids).logits, labels, input_ids=ids)
    assert reference.computed == 1 and loss_fn.counts.selected == 9
    with torch.no_grad():
        expected, _ = token_losses(reference.model(input_ids=ids).logits, labels)
    torch.testing.assert_close(reference(labels, input_ids=ids), expected)


def _args(tmp_path):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )


def test_trainer_compute_loss_func_trains_on_the_kept_tokens_only(tmp_path):
    from transformers import Trainer

    model = tiny_llama()
    before = model.lm_head.weight.detach().clone()
    loss_fn = SelectiveLoss(build("training", "entropy_topk", keep=0.5))
    Trainer(model=model, args=_args(tmp_path), train_dataset=Rows(), compute_loss_func=loss_fn).train()
    assert loss_fn.counts.steps == 2 and loss_fn.counts.labelled == 24 and loss_fn.counts.selected == 12
    assert float((model.lm_head.weight.detach() - before).abs().max()) > 0


def test_selective_trainer_runs_rho1_with_a_frozen_reference(tmp_path):
    from tokensift.training.trainer import SelectiveTrainer

    model = tiny_llama()
    trainer = SelectiveTrainer(
        model=model,
        args=_args(tmp_path),
        train_dataset=Rows(),
        policy=build("training", "rho1", keep=0.25),
        reference_model=tiny_llama(seed=2),
    )
    trainer.train()
    counts = trainer.selective.counts
    assert counts.steps == 2 and counts.selected == 6 and trainer.selective.reference.computed == 4
