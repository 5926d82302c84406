"""``tokensift bench training`` end to end on a tiny model and a tiny GSM8K-shaped data folder: the rows, the
reference model's row, resuming, data selection and the report's tables, targets and plots."""

import json
import random

import pytest

from tests.conftest import WORDS
from tests.text.test_cli import run
from tokensift.training.bench import TrainingBenchmark

NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def problems(count, seed):
    rng = random.Random(seed)
    plain = [w for w in WORDS[2:] if w not in NUMBERS]
    rows = []
    for _ in range(count):
        a, b = rng.choice(NUMBERS), rng.choice(NUMBERS)
        question = " ".join(rng.choices(plain, k=rng.randint(3, 8))) + f" {a} and {b} ?"
        rows.append(
            {"question": question, "answer": f"{a} and {b} : {rng.choice(NUMBERS)} .\n#### {rng.choice(NUMBERS)}"}
        )
    return rows


@pytest.fixture
def data_dir(tmp_path):
    folder = tmp_path / "data" / "gsm8k"
    folder.mkdir(parents=True)
    for split, count in (("train", 40), ("test", 6)):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in problems(count, len(split))))
    return folder.parent


def small(out, model_dir, data_dir, *extra):
    """A two-step grid on the tiny model and data folder, plus ``extra`` options."""
    return [
        "bench", "training", "--out", out, "-m", model_dir, "--data-dir", data_dir, "--ratios", "0.7",
        "--samples", "4", "--steps", "2", "--batch-size", "2", "--pool", "10", "--reference-steps", "2", *extra,
    ]  # fmt: skip


def test_bench_training_runs_the_grid_and_writes_its_report(monkeypatch, capsys, tmp_path, data_dir, model_dir):
    out = tmp_path / "out"
    args = small(out, model_dir, data_dir, "--lr", "0.01", "--backward", "sparse,exact")
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 0, err
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    speed = {(r["mode"], r["method"], r["ratio"]): r for r in rows if r["task"] == "speed"}
    assert set(speed) == {("exact", "full", 0.0), ("sparse", "eslm", 0.7), ("exact", "eslm", 0.7)}
    assert speed[("exact", "full", 0.0)]["backward_speedup"] == 1.0 and all(r["batches"] == 8 for r in speed.values())
    assert speed[("sparse", "eslm", 0.7)]["backward_positions"] < speed[("exact", "eslm", 0.7)]["backward_positions"]
    stored, rows = len(rows), [r for r in rows if r["task"] != "speed"]
    cells = {(r["task"], r["mode"], r["method"], r["ratio"]) for r in rows}
    default = TrainingBenchmark.registered(None)  # type: ignore[arg-type]
    assert "none" not in default and "entropy_topk" not in default and {"rho1", "eslm"} <= set(default)
    policies = {("selective", mode, m, 0.7) for mode in ("sparse", "exact") for m in default}
    assert cells == {
        ("selective", "exact", "start", 0.0), ("selective", "exact", "full", 0.0),
        ("selective", "exact", "reference", 0.0), *policies,
        *{("data_selection", "-", subset, 0.0) for subset in ("top", "random", "all")},
    }  # fmt: skip
    by = {(r["task"], r["mode"], r["method"]): r for r in rows}
    full, eslm = by[("selective", "exact", "full")], by[("selective", "sparse", "eslm")]
    assert full["kept_fraction"] == 1.0 and full["backward_positions"] > full["tokens_selected"]
    assert eslm["backward_positions"] == eslm["tokens_selected"] < 0.35 * eslm["tokens_labelled"]
    masked = by[("selective", "exact", "eslm")]
    assert (
        masked["tokens_selected"] == eslm["tokens_selected"]
        and masked["backward_positions"] == full["backward_positions"]
    )
    assert by[("data_selection", "-", "top")]["rows"] == by[("data_selection", "-", "random")]["rows"] == 3
    assert by[("data_selection", "-", "all")]["rows"] == 10 and by[("data_selection", "-", "all")]["steps"] == 5
    assert all(r["eval_examples"] == 4 and r["logprob"] < 0 for r in rows)
    report = (out / "report.md").read_text()
    assert "## Selective loss (GSM8K fine-tune)" in report and "## Data selection (score-data)" in report
    assert "rho1 at 30 % (sparse backward)" in report and "eslm at 30 % (exact backward)" in report
    assert (out / "plots" / "selective_logprob_vs_cost.png").exists()
    start = by[("selective", "exact", "start")]
    assert start["steps"] == 0 and start["tokens_selected"] == 0 and start["logprob"] < full["logprob"]
    assert "share of full's gain" in report and "## Cost of one step" in report and "| start | exact | 0% |" in report
    assert (out / "reference-2steps-seed0.pt").exists()  # a resumed run reads Rho-1's reference, not retrains it
    # resuming computes nothing new; --report-only rewrites the page from the rows
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 0 and len((out / "rows.jsonl").read_text().splitlines()) == stored
    code, _, err = run(monkeypatch, capsys, "bench", "training", "--out", out, "--report-only", "-m", model_dir)
    assert code == 0, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--methods", "sifd"], "not a loss policy"),
        (["--scorer", "eslm"], "not a data scorer"),
        (["--steps", "0"], "steps"),
    ],
)
def test_bench_training_bad_flags_are_one_line_errors(
    monkeypatch, capsys, tmp_path, data_dir, model_dir, args, message
):
    code, _, err = run(monkeypatch, capsys, "bench", "training", "--out", tmp_path / "o", "-m", model_dir,
                       "--data-dir", data_dir, *args)  # fmt: skip
    assert code == 2 and message in err and "Traceback" not in err


def test_the_budget_task_trains_each_policy_on_a_fraction_of_the_full_runs_backward(
    monkeypatch, capsys, tmp_path, data_dir, model_dir
):
    """No full row yet: the task trains it first; every policy then back-propagates at least half of its
    positions (--budget-factor 2) and stops at the step that gets there, taking more steps than full."""
    out = tmp_path / "out"
    args = small(out, model_dir, data_dir, "--tasks", "budget", "--methods", "eslm,random", "--budget-factor", "2")
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 0, err
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert [(r["task"], r["method"]) for r in rows] == [("selective", "full"), ("budget", "eslm"), ("budget", "random")]
    full, budgeted = rows[0], rows[1:]
    for r in budgeted:
        assert r["budget_positions"] == full["backward_positions"] // 2 and r["budget_factor"] == 2.0
        assert r["mode"] == "sparse-div2"
        per_step = r["backward_positions"] / r["steps"]
        assert r["budget_positions"] <= r["backward_positions"] < r["budget_positions"] + 2 * per_step
        assert r["steps"] > full["steps"] and r["backward_positions"] == r["tokens_selected"]
    report = (out / "report.md").read_text()
    assert "## Fixed backward compute" in report and "eslm at 30 %, " in report and "random (" in report
    code, _, err = run(monkeypatch, capsys, *args[:-2], "--budget-factor", "0.5")
    assert code != 0 and "budget-factor" in err
