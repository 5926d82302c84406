"""Data scoring: IFD and S-IFD arithmetic, scoring a file with a tiny model, keeping and copying rows exactly."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from tests.conftest import tiny_llama, word_level_tokenizer
from tokensift.errors import BadRowError, ParameterError
from tokensift.methods import build
from tokensift.select import Budget
from tokensift.training.datascore import _shared_prefix, copy_lines, keep_lines, response_losses, score_file
from tokensift.training.examples import encode_example, parse_row
from tokensift.training.stats import token_losses


def test_ifd_is_the_ratio_of_perplexities_and_ranks_ifd_over_one_last():
    conditional, alone = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 2.0, 2.5])
    scored = build("training", "ifd").score(conditional, alone)
    assert scored.ifd == pytest.approx(math.exp(2.0 - 6.5 / 3)) and scored.value == pytest.approx(scored.ifd)
    worse = build("training", "ifd").score(torch.tensor([3.0]), torch.tensor([1.0]))
    assert worse.ifd == pytest.approx(math.exp(2.0)) and worse.value == pytest.approx(-math.exp(2.0))


def test_sifd_counts_only_the_tokens_the_instruction_moves_most():
    conditional = torch.tensor([1.0, 0.5, 2.0, 3.0])
    alone = torch.tensor([1.01, 2.5, 2.0, 3.5])  # |delta| = 0.01, 2.0, 0.0, 0.5
    scored = build("training", "sifd", token_keep=0.5).score(conditional, alone)
    assert scored.tokens == [1, 3]
    assert scored.value == pytest.approx(math.exp((0.5 + 3.0) / 2 - (2.5 + 3.5) / 2))
    assert scored.ifd == pytest.approx(math.exp(6.5 / 4 - 9.01 / 4))


def test_response_losses_are_the_models_losses_on_the_response_tokens():
    model, tokenizer = tiny_llama(), word_level_tokenizer()
    encoded = [
        encode_example(tokenizer, parse_row({"prompt": p, "response": r}, 1))
        for p, r in [("the cat", "sat on the mat ."), ("a big red dog ran", "to the house")]
    ]
    assert_each_examples_own_losses(model, encoded, response_losses(model, encoded, 0))


def assert_each_examples_own_losses(model, encoded, found):
    """``found`` holds, per example, the model's loss on each response token of that example run alone."""
    for example, losses in zip(encoded, found, strict=True):
        ids = torch.tensor([example.ids])
        with torch.no_grad():
            alone, _ = token_losses(model(input_ids=ids).logits, ids)
        start = len(example.prompt) - 1
        assert losses.shape == (len(example.response),)
        torch.testing.assert_close(losses, alone[0, start : start + len(example.response)], atol=1e-5, rtol=1e-5)


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


ROWS = [
    {"prompt": "the cat sat", "response": "on the mat ."},
    {"question": "one and two ?", "answer": "three"},
    {"instruction": "the red dog", "input": "ran to", "output": "the big house ."},
    {"messages": [{"role": "user", "content": "login failed"}, {"role": "assistant", "content": "admin error ."}]},
    {"prompt": "five six", "response": "seven eight nine"},
]


def test_score_file_scores_every_row_and_names_bad_ones(tmp_path):
    loaded = SimpleNamespace(model=tiny_llama(), tokenizer=word_level_tokenizer())
    path = write(tmp_path / "d.jsonl", [*ROWS[:2], "{broken", *ROWS[2:]])
    with pytest.raises(BadRowError, match="line 3"):
        score_file(loaded, path, build("training", "sifd"), batch_size=2)
    report = score_file(loaded, path, build("training", "sifd"), batch_size=2, skip_bad=True)
    assert [r.line for r in report.scores] == [1, 2, 4, 5, 6]
    assert [e.line for e in report.skipped] == [3]
    single = score_file(loaded, write(tmp_path / "one.jsonl", [ROWS[2]]), build("training", "sifd"), batch_size=1)
    assert single.scores[0].score == pytest.approx(report.scores[2].score, rel=1e-5)
    too_long = score_file(loaded, path, build("training", "ifd"), max_tokens=6, skip_bad=True)
    assert {e.line for e in too_long.skipped} >= {3, 4} and all(r.response_tokens + 1 <= 6 for r in too_long.scores)


def test_keep_lines_takes_the_best_and_copy_lines_writes_them_unchanged_in_file_order(tmp_path):
    loaded = SimpleNamespace(model=tiny_llama(), tokenizer=word_level_tokenizer())
    path = write(tmp_path / "d.jsonl", ROWS)
    report = score_file(loaded, path, build("training", "ifd"))
    kept = keep_lines(report, Budget(keep=0.4))
    best = sorted(report.scores, key=lambda r: -r.score)[:2]
    assert kept == {r.line for r in best}
    out = tmp_path / "kept.jsonl"
    assert copy_lines(path, out, kept) == 2
    original = path.read_text().splitlines()
    assert out.read_text().splitlines() == [original[n - 1] for n in sorted(kept)]
    with pytest.raises(ParameterError):
        keep_lines(report, Budget(keep_tokens=9))
    with pytest.raises(ParameterError):
        copy_lines(path, path, kept)


def test_response_losses_share_the_common_prefix_and_match_each_example_alone():
    """Examples starting with the same tokens (a system turn) and responses scored after the same empty
    prompt: the prefix is run once, and every loss is still the model's loss on that example alone."""
    model, tokenizer = tiny_llama(), word_level_tokenizer()
    system = "the big red dog ran to the house ."
    pairs = [("the cat", "sat on the mat ."), ("a dog ran", "to the house"), ("one and two", "three")]
    conditional = [
        encode_example(tokenizer, parse_row({"prompt": f"{system} {p}", "response": r}, 1)) for p, r in pairs
    ]
    alone = [encode_example(tokenizer, parse_row({"prompt": system, "response": r}, 1)) for _, r in pairs]
    encoded = conditional + alone
    assert _shared_prefix(model, encoded) >= 8
    assert_each_examples_own_losses(model, encoded, response_losses(model, encoded, 0))
