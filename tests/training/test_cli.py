"""``tokensift score-data`` and ``tokensift train`` end to end on a tiny local model folder: tables, JSON,
kept rows written unchanged, and bad input as one-line errors with a non-zero exit."""

import json

import pytest

from tests.text.test_cli import run
from tests.training.test_datascore import ROWS, write


def test_score_data_ranks_rows_and_writes_the_kept_ones_unchanged(monkeypatch, capsys, tmp_path, model_dir):
    data = write(tmp_path / "d.jsonl", ROWS)
    kept, scores = tmp_path / "kept.jsonl", tmp_path / "scores.jsonl"
    code, out, err = run(
        monkeypatch,
        capsys,
        "score-data",
        data,
        "-m",
        model_dir,
        "--keep",
        "0.4",
        "--out",
        kept,
        "--scores",
        scores,
        "--json",
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["rows"] == 5 and summary["kept"] == 2 and summary["written"] == 2 and summary["skipped"] == 0
    ranked = [json.loads(line) for line in scores.read_text().splitlines()]
    assert [r["rank"] for r in ranked] == [1, 2, 3, 4, 5]
    assert [r["line"] for r in ranked[:2]] == [r["line"] for r in summary["top"][:2]]
    chosen = sorted(r["line"] for r in ranked if r["kept"])
    assert kept.read_text().splitlines() == [data.read_text().splitlines()[n - 1] for n in chosen]
    code, out, err = run(monkeypatch, capsys, "score-data", data, "-m", model_dir, "--method", "ifd", "--top", "1")
    assert code == 0 and "informative tokens" in out and "5 rows scored" in err


def test_score_data_names_a_bad_line_or_skips_it(monkeypatch, capsys, tmp_path, model_dir):
    data = write(tmp_path / "d.jsonl", [ROWS[0], ROWS[1], '{"prompt": "x"}', ROWS[2]])
    code, out, err = run(monkeypatch, capsys, "score-data", data, "-m", model_dir)
    assert code == 2 and "line 3" in err and "Traceback" not in err
    code, out, err = run(monkeypatch, capsys, "score-data", data, "-m", model_dir, "--skip-bad", "--json")
    summary = json.loads(out)
    assert code == 0 and summary["rows"] == 3 and summary["skipped"] == 1 and summary["skipped_lines"] == [3]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--out", "kept.jsonl"], "--out needs --keep"),
        (["--keep", "0"], "keep must be in"),
        (["--method", "eslm"], "not a data scorer"),
        (["--method", "nope"], "unknown training method"),
        (["--batch-size", "0"], "batch_size"),
    ],
)
def test_score_data_bad_options_are_one_line_errors(monkeypatch, capsys, tmp_path, model_dir, args, message):
    data = write(tmp_path / "d.jsonl", ROWS)
    monkeypatch.chdir(tmp_path)
    code, _out, err = run(monkeypatch, capsys, "score-data", data, "-m", model_dir, *args)
    assert code == 2 and message in err and "Traceback" not in err


def test_score_data_missing_file_is_an_error(monkeypatch, capsys, tmp_path, model_dir):
    code, _out, err = run(monkeypatch, capsys, "score-data", tmp_path / "none.jsonl", "-m", model_dir)
    assert code == 2 and "not found" in err


def test_train_reports_tokens_and_time_as_json(monkeypatch, capsys, tmp_path, model_dir):
    data = write(tmp_path / "train.jsonl", ROWS)
    held = write(tmp_path / "held.jsonl", ROWS[:2])
    saved = tmp_path / "saved"
    code, out, err = run(
        monkeypatch,
        capsys,
        "train",
        data,
        "-m",
        model_dir,
        "--policy",
        "eslm",
        "--keep",
        "0.5",
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--lr",
        "0.01",
        "--eval",
        held,
        "--save",
        saved,
        "--json",
    )
    assert code == 0, err
    record = json.loads(out)
    assert record["policy"] == "eslm" and record["backward"] == "sparse" and record["steps"] == 3
    assert abs(record["tokens_selected"] - record["tokens_labelled"] / 2) <= 1.5  # half of each step, rounded
    assert record["tokens_backward"] == record["tokens_selected"]
    assert record["eval_after"]["logprob"] > record["eval_before"]["logprob"]
    assert (saved / "config.json").exists()
    code, out, err = run(monkeypatch, capsys, "train", data, "-m", model_dir, "--steps", "1", "--backward", "exact")
    assert code == 0 and "positions back-propagated" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policy", "sifd"], "data scorer, not a loss policy"),
        (["--backward", "half"], "--backward must be"),
        (["--steps", "0"], "steps"),
        (["--policy", "eslm", "--keep", "2"], "keep must be in"),
    ],
)
def test_train_bad_options_are_one_line_errors(monkeypatch, capsys, tmp_path, model_dir, args, message):
    data = write(tmp_path / "train.jsonl", ROWS)
    code, _out, err = run(monkeypatch, capsys, "train", data, "-m", model_dir, *args)
    assert code == 2 and message in err and "Traceback" not in err
