"""`run_batch` in one process (``ray="off"``) on a tiny random model: every row back, errors in rows, resume."""

import json

import pyarrow.parquet as pq
import pytest

from tokensift.batch.jobs import CompressJob, InspectJob, KVCompressJob, ScoreDataJob
from tokensift.batch.runner import run_batch
from tokensift.errors import ParameterError
from tokensift.inspection import inspect_text
from tokensift.models import load_model, prefix_token_id

TEXTS = ["the cat sat on the mat .", "a big red dog ran to the house .", "one and two", "login failed for admin"]


def inspect_input(path):
    rows = [{"id": i, "text": t} for i, t in enumerate(TEXTS)]
    rows += [{"id": 10, "text": None}, {"id": 11, "text": "  "}, {"id": 12, "body": "the cat"}, {"id": 13, "text": 7}]
    rows += [{"id": 14, "text": " ".join(["the cat"] * 20)}]
    lines = [json.dumps(r) for r in rows] + ["{oops", ""]
    path.write_text("".join(line + "\n" for line in lines))
    return path


EXPECTED_ERRORS = [
    None,
    None,
    None,
    None,
    "'text' is null",
    "'text' is empty",
    "no 'text' field (choose the column with --text-field)",
    "'text' is a int, not a string",
    "40 tokens, more than --max-tokens 30",
    "line 10 is not valid JSON: Expecting property name enclosed in double quotes (column 2)",
    "line 11 is blank",
]


def test_every_row_comes_back_in_order_with_its_results_or_its_error(tmp_path, model_dir):
    source = inspect_input(tmp_path / "in.jsonl")
    job = InspectJob(model=str(model_dir), max_tokens=30, batch_size=3)
    report = run_batch(job, source, tmp_path / "out.parquet", ray="off", shard_rows=4)
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert (report.rows, report.errors, report.shards, report.mode) == (11, 7, 3, "off")
    assert [r["error"] for r in rows] == EXPECTED_ERRORS
    assert [r["id"] for r in rows[:9]] == [0, 1, 2, 3, 10, 11, 12, 13, 14]
    assert rows[6]["body"] == "the cat" and rows[9]["raw"] == "{oops" and rows[10]["raw"] == ""
    loaded = load_model(str(model_dir))
    prefix = prefix_token_id(loaded.tokenizer, loaded.spec)
    for row, text in zip(rows, TEXTS, strict=False):
        direct = inspect_text(text, loaded.model, loaded.tokenizer, prefix_id=prefix)
        assert row["tokens"] == [t.text for t in direct.tokens]
        assert row["surprisal"] == pytest.approx([t.surprisal for t in direct.tokens], abs=1e-5)
        assert row["perplexity"] == pytest.approx(direct.perplexity, rel=1e-5)
    assert all(row["surprisal"] is None for row in rows[4:])
    assert not (tmp_path / "out.parquet.parts").exists()


def test_a_rerun_skips_the_shards_already_written(tmp_path, model_dir):
    source = inspect_input(tmp_path / "in.jsonl")
    job = InspectJob(model=str(model_dir), max_tokens=30)
    first = run_batch(job, source, tmp_path / "out.jsonl", ray="off", shard_rows=4, keep_parts=True)
    before = (tmp_path / "out.jsonl").read_text()
    parts = tmp_path / "out.jsonl.parts"
    (parts / "part-000001.jsonl").unlink()  # as if the job had stopped before shard 1 was written
    (tmp_path / "out.jsonl").unlink()
    again = run_batch(job, source, tmp_path / "out.jsonl", ray="off", shard_rows=4)
    assert (first.shards_skipped, again.shards_skipped, again.rows_run, again.rows) == (0, 2, 4, 11)
    assert (tmp_path / "out.jsonl").read_text() == before
    assert len(before.splitlines()) == 11


def test_a_different_job_or_a_finished_output_is_refused_unless_restarted(tmp_path, model_dir):
    source = inspect_input(tmp_path / "in.jsonl")
    out = tmp_path / "out.parquet"
    run_batch(InspectJob(model=str(model_dir), max_tokens=30), source, out, ray="off", keep_parts=True)
    with pytest.raises(ParameterError, match=r"parts of a different job \(options differ\); pass --restart"):
        run_batch(InspectJob(model=str(model_dir), max_tokens=31), source, out, ray="off")
    (tmp_path / "out.parquet.parts").rename(tmp_path / "old.parts")
    with pytest.raises(ParameterError, match=r"already exists .* pass --restart"):
        run_batch(InspectJob(model=str(model_dir), max_tokens=30), source, out, ray="off")
    report = run_batch(InspectJob(model=str(model_dir), max_tokens=30), source, out, ray="off", restart=True)
    assert report.rows == 11


def test_a_column_the_job_writes_must_not_be_in_the_input(tmp_path, model_dir):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "the cat", "perplexity": 3}\n')
    with pytest.raises(ParameterError, match="already has column\\(s\\) perplexity"):
        run_batch(InspectJob(model=str(model_dir)), source, tmp_path / "out.parquet", ray="off")


def test_score_data_rows_match_the_score_data_command(tmp_path, model_dir):
    from tokensift.methods import build
    from tokensift.training.datascore import score_file

    rows = [
        {"prompt": "the cat sat", "response": "on the mat ."},
        {"question": "one and two ?", "answer": "three"},
        {"instruction": "the red dog", "input": "ran to", "output": "the big house ."},
        {"prompt": "the cat", "response": None},
    ]
    source = tmp_path / "data.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_batch(ScoreDataJob(model=str(model_dir), batch_size=2), source, tmp_path / "out.parquet", ray="off")
    found = pq.read_table(tmp_path / "out.parquet").to_pylist()
    direct = score_file(load_model(str(model_dir)), source, build("training", "sifd"), batch_size=2, skip_bad=True)
    assert [r["score"] for r in found[:3]] == pytest.approx([s.score for s in direct.scores], rel=1e-5)
    assert [r["informative"] for r in found[:3]] == [s.informative for s in direct.scores]
    assert found[3]["error"] == "field 'response' must be a string, got NoneType"
    assert found[3]["prompt"] == "the cat"


def test_compress_rows_equal_the_compressor_and_an_over_long_text_is_the_rows_error(tmp_path, model_dir):
    from tokensift.text.api import Compressor

    rows = [{"text": TEXTS[1]}, {"text": TEXTS[0], "q": "the cat"}, {"text": f"{TEXTS[1]} {TEXTS[1]}"}]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    job = CompressJob(model=str(model_dir), budget={"keep_tokens": 4}, question_field="q", max_tokens=12)
    report = run_batch(job, source, tmp_path / "out.jsonl", ray="off")
    found = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    compressor = Compressor("llmlingua", model=load_model(str(model_dir)))
    for row, given in zip(found[:2], rows[:2], strict=True):
        direct = compressor.compress(compressor.prepare(given["text"], given.get("q")), keep_tokens=4)
        assert (row["compressed"], row["tokens_after"], row["error"]) == (direct.compressed, direct.tokens_after, None)
        assert row["tokens_after"] <= 4 < row["tokens_before"]
    assert found[2]["compressed"] is None and found[2]["error"] == "18 tokens, more than --max-tokens 12"
    assert report.errors == 1


def test_kv_compress_writes_each_context_once_under_a_digest_id(tmp_path, model_dir):
    from transformers import DynamicCache

    from tokensift.serve.store import ContextStore

    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in [TEXTS[1], "", TEXTS[1]]))
    job = KVCompressJob(model=str(model_dir), method="snapkv", budget={"ratio": 0.5}, store=str(tmp_path / "store"))
    run_batch(job, source, tmp_path / "out.parquet", ray="off")
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert rows[1]["error"] == "'text' is empty" and rows[1]["context_id"] is None
    assert rows[0]["context_id"] == rows[2]["context_id"]  # the same text, method and budget: the same context
    assert rows[0]["bytes_stored"] < rows[0]["bytes_full"]
    loaded = load_model(str(model_dir))
    store = ContextStore(tmp_path / "store", loaded.name, 2**20, lambda: DynamicCache(config=loaded.model.config))
    assert [c.id for c in store.list()] == [rows[0]["context_id"]]
    assert store.get(rows[0]["context_id"]).info.tokens == rows[0]["tokens"]
