"""The training target on SmolLM2-135M with a few GSM8K rows (select with ``-m model``)."""

import json
import math

import pytest
import torch

from tests.text.test_cli import run
from tokensift.methods import build
from tokensift.models import load_model
from tokensift.training.examples import encode_example, parse_row
from tokensift.training.finetuning import collate
from tokensift.training.loss import full_loss
from tokensift.training.sparse import sparse_step
from tokensift.training.stats import token_losses

pytestmark = pytest.mark.model

ROWS = [
    {
        "question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
        "answer": "Tom has 3 + 4 = <<3+4=7>>7 apples.\n#### 7",
    },
    {
        "question": "A book costs $12. How much do 5 books cost?",
        "answer": "5 books cost 5 * 12 = $<<5*12=60>>60.\n#### 60",
    },
    {
        "question": "Sara walks 2 miles a day. How far does she walk in a week?",
        "answer": "A week has 7 days, so she walks 2 * 7 = <<2*7=14>>14 miles.\n#### 14",
    },
    {
        "question": "There are 20 birds and 8 fly away. How many are left?",
        "answer": "20 - 8 = <<20-8=12>>12 birds are left.\n#### 12",
    },
]


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2-135m")


def test_sparse_step_on_smollm2_gives_the_models_own_loss_on_the_selected_tokens(smollm2):
    model, tokenizer = smollm2.model, smollm2.tokenizer
    ids, mask, labels = collate([encode_example(tokenizer, parse_row(r, 1)) for r in ROWS[:2]], tokenizer.eos_token_id)
    with torch.no_grad():
        losses, valid = token_losses(model(input_ids=ids, attention_mask=mask).logits, labels)
        step = sparse_step(model, ids, labels, build("training", "eslm", keep=0.3), attention_mask=mask)
    assert step.selected == round(0.3 * int(valid.sum()))
    assert abs(float(step.loss) - float(losses[step.mask].mean())) < 1e-4
    everything = ids[:1, :24]
    model.zero_grad()
    full_loss(model(input_ids=everything).logits, everything).backward()
    expected = model.model.layers[3].self_attn.k_proj.weight.grad.clone()
    model.zero_grad()
    sparse_step(model, everything, everything, build("training", "none")).loss.backward()
    torch.testing.assert_close(model.model.layers[3].self_attn.k_proj.weight.grad, expected, atol=1e-5, rtol=1e-3)
    model.zero_grad()


def test_score_data_and_train_run_on_smollm2(monkeypatch, capsys, tmp_path):
    data = tmp_path / "gsm.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    code, out, err = run(
        monkeypatch, capsys, "score-data", data, "--keep", "0.5", "--out", tmp_path / "k.jsonl", "--json"
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["rows"] == 4 and summary["written"] == 2
    assert all(math.isfinite(r["score"]) and r["informative"] for r in summary["top"])
    code, out, err = run(
        monkeypatch,
        capsys,
        "train",
        data,
        "--policy",
        "rho1",
        "--keep",
        "0.3",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--eval",
        data,
        "--eval-samples",
        "2",
        "--json",
    )
    assert code == 0, err
    record = json.loads(out)
    assert record["policy"] == "rho1" and record["tokens_backward"] == record["tokens_selected"] > 0
    assert record["tokens_selected"] < 0.35 * record["tokens_labelled"]
    assert record["eval_before"]["examples"] == 2 and record["backward_s"] > 0
