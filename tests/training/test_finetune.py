"""The CPU fine-tune on tiny models: it trains, counts what it back-propagated, and evaluates held-out rows."""

import pytest
import torch

from tests.conftest import tiny_llama, word_level_tokenizer
from tokensift.errors import ParameterError
from tokensift.methods import build
from tokensift.training import Reference, evaluate, finetune
from tokensift.training.examples import parse_row
from tokensift.training.finetuning import collate, final_number, order

TRAIN = [
    parse_row({"prompt": p, "response": r}, i)
    for i, (p, r) in enumerate(
        [
            ("the cat sat", "on the mat ."),
            ("one and two", "three ."),
            ("the red dog ran", "to the big house ."),
            ("login failed", "admin error ."),
            ("five six", "seven eight nine ."),
        ]
    )
]


def test_collate_labels_only_the_response_and_pads_right():
    tokenizer = word_level_tokenizer()
    from tokensift.training.examples import encode_example

    encoded = [encode_example(tokenizer, e) for e in TRAIN[:2]]
    ids, mask, labels = collate(encoded, 0)
    assert mask.sum(1).tolist() == [len(e.ids) for e in encoded]
    assert labels[1].tolist() == [-100, -100, -100, *encoded[1].response] + [-100] * (ids.shape[1] - 5)


def test_order_covers_every_example_once_per_epoch():
    batches = list(order(5, 5, 2, seed=0))
    flat = [i for b in batches for i in b]
    assert sorted(flat[:5]) == [0, 1, 2, 3, 4] and len(flat) == 10


@pytest.mark.parametrize(
    ("policy", "backward"), [("none", "exact"), ("eslm", "sparse"), ("rho1", "sparse"), ("eslm", "response")]
)
def test_finetune_lowers_the_training_loss_and_counts_tokens(policy, backward):
    model, tokenizer = tiny_llama(), word_level_tokenizer()
    before = evaluate(model, tokenizer, TRAIN)
    reference = Reference(tiny_llama()) if policy == "rho1" else None
    chosen = build("training", policy, keep=0.5)
    result = finetune(
        model, tokenizer, TRAIN, chosen, steps=12, batch_size=5, lr=3e-3, backward=backward, reference=reference
    )
    after = evaluate(model, tokenizer, TRAIN)
    assert after.logprob > before.logprob
    labelled = sum(len(e.response.split()) for e in TRAIN)  # one word-level token per word, no end token
    assert result.counts.steps == 12 and result.counts.labelled == 12 * labelled == 12 * 18
    assert result.counts.selected == 12 * (18 if policy == "none" else 9)
    if backward == "sparse":
        assert result.counts.backward == result.counts.selected
    elif backward == "response":
        assert result.counts.backward == result.counts.labelled
    else:
        assert result.counts.backward == 12 * 32  # every position of every row: 14 prompt + 18 response words
    assert result.backward_s > 0 and len(result.losses) == 12


def test_a_backward_budget_stops_at_the_step_that_reaches_it():
    """Sparse eslm at keep 0.5 back-propagates 9 positions per step of all five rows: a budget of 20 is
    reached on the third step (27), and the result says three steps were taken, not the most allowed."""
    model, tokenizer = tiny_llama(), word_level_tokenizer()
    chosen = build("training", "eslm", keep=0.5)
    result = finetune(model, tokenizer, TRAIN, chosen, steps=50, batch_size=5, backward_budget=20)
    assert result.steps == result.counts.steps == 3 and result.counts.backward == 27 and len(result.losses) == 3
    with pytest.raises(ParameterError, match="backward_budget"):
        finetune(model, tokenizer, TRAIN, chosen, steps=5, backward_budget=0)


def test_finetune_refuses_what_it_cannot_do():
    model, tokenizer = tiny_llama(), word_level_tokenizer()
    with pytest.raises(ParameterError, match="reference"):
        finetune(model, tokenizer, TRAIN, build("training", "rho1"), steps=1)
    with pytest.raises(ParameterError, match="max-tokens"):
        finetune(model, tokenizer, TRAIN, build("training", "none"), steps=1, max_tokens=4)
    with pytest.raises(ParameterError, match="backward"):
        finetune(model, tokenizer, TRAIN, build("training", "none"), steps=1, backward="half")  # type: ignore[arg-type]
    assert not model.training and torch.is_grad_enabled()


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("She has 3 + 4 = <<3+4=7>>7 apples.\n#### 7", "7"),
        ("so 1,200 dollars in total", "1200"),
        ("The answer is 12.5.", "12.5"),
        ("#### -3", "-3"),
        ("it costs 18.0", "18"),
        ("no digits here", None),
    ],
)
def test_final_number_reads_gsm8k_answers(text, number):
    assert final_number(text) == number
