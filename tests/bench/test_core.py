import csv
import json

import pytest

from tokensift.bench import KEY_FIELDS, RowStore, summarize, write_report


def row(sample, method="snapkv", ratio=0.5, score=1.0, **extra):
    return {
        "system": "tokensift",
        "target": "kv",
        "model": "m",
        "task": "niah",
        "mode": "query_agnostic",
        "method": method,
        "ratio": ratio,
        "sample_id": sample,
        "score": score,
        **extra,
    }


def test_store_resumes_and_drops_a_cut_last_line(tmp_path, capsys):
    store = RowStore(tmp_path)
    store.append(row(0))
    store.append(row(1, kept_fraction=float("nan")))
    with store.path.open("a") as handle:
        handle.write('{"system": "tokensift", "targ')  # a run killed mid-write
    again = RowStore(tmp_path)
    assert "incomplete last row" in capsys.readouterr().err
    assert len(again.rows()) == 2 and again.rows()[1]["kept_fraction"] is None

    def key(**changes):
        return {k: v for k, v in row(1, **changes).items() if k in KEY_FIELDS}

    assert again.has(**key(ratio=0.5000000001))
    assert not again.has(**key(ratio=0.25))
    assert all(json.loads(line) for line in store.path.read_text().splitlines())


def test_store_refuses_rows_without_key_fields_and_corrupt_middle_lines(tmp_path):
    store = RowStore(tmp_path)
    with pytest.raises(ValueError, match="sample_id"):
        store.append({"system": "x"})
    store.path.write_text("not json\n" + json.dumps(row(0)) + "\n")
    with pytest.raises(ValueError, match=r"rows\.jsonl:1 is not valid JSON"):
        RowStore(tmp_path)


def test_summary_means_and_fractions():
    rows = [
        row(0, score=1.0, found=True),
        row(1, score=0.0, found=False),
        row(2, error="oom"),
        row(0, method="h2o", score=0.5),
    ]
    cells = {r["method"]: r for r in summarize(rows)}
    assert cells["snapkv"]["n"] == 2 and cells["snapkv"]["errors"] == 1
    assert cells["snapkv"]["score"] == 0.5 and cells["snapkv"]["found"] == 0.5
    assert cells["h2o"]["score"] == 0.5 and "sample_id" not in cells["h2o"]


def test_report_writes_csv_plots_and_markdown(tmp_path):
    rows = [
        row(s, method=m, ratio=r, score=float(s % 2), kept_fraction=r, cache_bytes=1000 * r)
        for s in range(3)
        for m in ("snapkv", "h2o")
        for r in (0.5, 0.25)
    ]
    rows += [dict(row(0, ratio=0.5, score=0.0, kept_fraction=0.5), system="kvpress")]
    report = write_report(
        tmp_path,
        rows,
        title="KV",
        command="tokensift bench kv",
        quality={"niah": "score"},
        cost=["cache_bytes"],
        notes=["SmolLM2"],
    )
    text = report.read_text()
    assert "| tokensift | snapkv | 0.333 (3) | 0.333 (3) |" in text
    assert "| kvpress | snapkv | 0 (1) | – |" in text
    assert "```bash\ntokensift bench kv\n```" in text and "- SmolLM2" in text
    assert (tmp_path / "plots" / "niah_score_vs_kept_fraction.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "niah_score_vs_cache_bytes.png").exists()
    with (tmp_path / "summary.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 5


def test_store_writes_a_key_once(tmp_path):
    store = RowStore(tmp_path)
    assert store.append(row(0)) is True
    assert store.append(row(0, score=0.9)) is False  # same key: the stored row stays
    assert [r["score"] for r in RowStore(tmp_path).rows()] == [row(0)["score"]]
