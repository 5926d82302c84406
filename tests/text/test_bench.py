"""``tokensift bench text`` on a tiny model and generated data: rows, resume, report, reader."""

import gzip
import json
from pathlib import Path

import pytest
import torch

from tests.text.helpers import scorer, sentence_text
from tokensift.bench import RowStore
from tokensift.bench.benchmark import sample_counts
from tokensift.errors import ParameterError
from tokensift.text.bench import Reader, TextBenchConfig, TextBenchmark


def run_bench(config: TextBenchConfig, tiny) -> Path:
    bench = TextBenchmark(config)
    bench.loaded = tiny  # a Scorer stands in for the loaded model
    return bench.run()


@pytest.fixture
def data(tmp_path):
    nq = tmp_path / "lost_in_the_middle"
    nq.mkdir()
    with gzip.open(nq / "nq-open-oracle.jsonl.gz", "wt") as handle:
        for k in range(6):
            colour = ["red", "blue"][k % 2]
            ctx = {
                "title": "the house",
                "text": sentence_text(30, k) + f" the answer is {colour} cat . Charles Darwin sat on June 4, 2003 .",
            }
            handle.write(json.dumps({"question": "what cat", "answers": ["red cat"], "ctxs": [ctx]}) + "\n")
    gsm = tmp_path / "gsm8k"
    gsm.mkdir()
    (gsm / "prompt_hardest.txt").write_text(sentence_text(80, 1) + "\n\n" + sentence_text(80, 2))
    line = {"question": "the cat sat", "answer": "the dog ran <<1+1=2>>\n#### two"}
    (gsm / "test.jsonl").write_text(json.dumps(line) + "\n" + json.dumps(line) + "\n")
    essays = tmp_path / "pg_essays"
    essays.mkdir()
    (essays / "a.txt").write_text(sentence_text(400, 9))
    return tmp_path


def test_bench_writes_rows_resumes_and_reports(tmp_path, data, word_tokenizer):
    config = TextBenchConfig(
        out=tmp_path / "out",
        model="tiny",
        methods=("random", "surprisal"),
        ratios=(0.5,),
        samples=2,
        distractors=1,
        max_length=200,
        results=tmp_path / "RESULTS.md",
        data_dir=data,
    )
    tiny = scorer(word_tokenizer)
    page = run_bench(config, tiny)
    rows = RowStore(config.out).rows()
    by_task = {t: [r for r in rows if r["task"] == t and r["method"] != "full"] for t in TextBenchmark.quality}
    assert len(by_task["nq_qa"]) == 2 * 2 and len(by_task["gsm8k_cot"]) == 2 * 2
    assert len(by_task["nq_agnostic"]) == 2 * 2 and not by_task["nq_single"]  # nq_single only when asked
    assert len(by_task["rate_adherence"]) == 3 * 2  # lengths 50, 100, 200
    assert all(r["tokens_after"] <= round(0.5 * r["tokens_before"]) for r in by_task["nq_qa"])
    assert all("logprob_delta" in r and "gold_retained" in r for r in by_task["nq_qa"])
    assert all(r["cut_units"] == 0 for r in rows if r["method"] != "full")  # no output cuts a date or a name
    text = page.read_text()
    assert text.startswith("# Prompt compression") and "## nq_qa" in text and "(RESULTS/plots/" in text
    assert all(r["ratio"] == 0.0 for r in rows if r["method"] == "full")
    run_bench(config, tiny)  # resumed: nothing new
    assert len(RowStore(config.out).rows()) == len(rows)


@pytest.mark.parametrize(
    "bad,option",
    [
        ({"tasks": ("mmlu",)}, "tasks"),
        ({"methods": ("zip",)}, "method"),
        ({"ratios": (1.5,)}, "ratio"),
        ({"peers": ("kvpress",)}, "peers"),
        ({"samples": -1}, "samples"),
    ],
)
def test_bench_config_rejects_unknowns(tmp_path, bad, option):
    with pytest.raises(ParameterError) as info:
        TextBenchmark(TextBenchConfig(out=tmp_path, **bad))
    assert getattr(info.value, "option", None) == option or option in str(info.value)


def test_reader_logprob_matches_a_direct_computation(word_tokenizer):
    tiny = scorer(word_tokenizer)
    reader = Reader(tiny)
    (value,) = reader.logprobs("the cat sat on", [(" the", " mat")])
    ids = torch.tensor([1, *tiny.encode("the cat sat on")[0].tolist(), *tiny.encode(" the mat")[0].tolist()])
    with torch.no_grad():
        logp = torch.log_softmax(tiny.model(ids[None]).logits[0].double(), -1)
    assert value == pytest.approx(float(logp[-2, ids[-1]]), rel=1e-5)
    again = reader.logprobs("the cat sat on", [(" the", " mat"), (" the", " mat")])
    assert again[0] == pytest.approx(again[1], rel=1e-6)  # the context cache is restored between probes


def test_gsm8k_resumed_with_more_samples_adds_only_the_new_questions(tmp_path, data, word_tokenizer):
    config = TextBenchConfig(
        out=tmp_path / "out", tasks=("gsm8k_cot",), methods=("random",), ratios=(0.5,), samples=1, data_dir=data
    )
    tiny = scorer(word_tokenizer)
    run_bench(config, tiny)
    config.samples = 2
    run_bench(config, tiny)
    ids = [r["sample_id"] for r in RowStore(config.out).rows() if r["method"] == "random"]
    assert sorted(ids) == ["gsm0", "gsm1"]


def test_report_lists_failed_rows(tmp_path):
    key = {"system": "llmlingua", "target": "text", "model": "m", "task": "rate_adherence", "mode": "-"}
    rows = [{**key, "method": "llmlingua", "ratio": 0.5, "sample_id": "len8000", "error": "RuntimeError: boom"}]
    counts, note = sample_counts(rows, ["rate_adherence"])
    assert counts == "rate_adherence: 0–0 rows per cell"
    assert note == (
        "**failed** (llmlingua llmlingua, rate_adherence): 1 rows not in the tables (len8000@0.5): RuntimeError: boom"
    )


FAKE_PEER = """
import json, sys
_, model, inputs, outputs = sys.argv
with open(outputs, "a") as out:
    for line in open(inputs):
        item = json.loads(line)
        for mode in item["modes"]:
            for rate in item["rates"]:
                parts = item["prompt"] if isinstance(item["prompt"], list) else [item["prompt"]]
                kept = [" ".join(p.split()[: max(1, round(rate * len(p.split())))]) for p in parts]
                error = "RuntimeError: boom" if item["id"] == "len200" else None
                row = {"id": item["id"], "mode": mode, "rate": rate, "seconds": 0.01, "error": error,
                       "compressed": kept if isinstance(item["prompt"], list) else kept[0]}
                out.write(json.dumps(row) + "\\n")
"""


def test_the_llmlingua_peer_runs_in_its_own_python_on_the_same_instances(tmp_path, data, word_tokenizer, monkeypatch):
    import sys
    from types import SimpleNamespace

    import tokensift.text.bench as text_bench

    peer = tmp_path / "peer"
    (peer / ".venv" / "bin").mkdir(parents=True)
    (peer / ".venv" / "bin" / "python").symlink_to(sys.executable)
    (peer / "run.py").write_text(FAKE_PEER)
    monkeypatch.setattr(text_bench, "PEER_DIR", peer)
    config = TextBenchConfig(
        out=tmp_path / "out", model="tiny", tasks=("nq_qa", "rate_adherence"), methods=("random",), ratios=(0.5, 0.75),
        samples=2, distractors=1, max_length=200, peers=("llmlingua",), data_dir=data,
    )  # fmt: skip
    tiny = scorer(word_tokenizer)
    bench = TextBenchmark(config)
    bench.loaded = SimpleNamespace(model=tiny.model, tokenizer=tiny.tokenizer, spec=None, name="tiny", path=tmp_path)
    page = bench.run()
    rows = [r for r in RowStore(config.out).rows() if r["system"] == "llmlingua"]
    nq = [r for r in rows if r["task"] == "nq_qa"]
    assert sorted({(r["method"], r["ratio"]) for r in nq}) == [
        ("llmlingua", 0.5), ("llmlingua", 0.75), ("longllmlingua", 0.5), ("longllmlingua", 0.75)
    ]  # fmt: skip
    assert len(nq) == 2 * 2 * 2 and all("gold_retained" in r and "logprob_delta" in r for r in nq)
    failed = [r for r in rows if r.get("error")]
    assert {r["sample_id"] for r in failed} == {"len200"} and len(failed) == 2
    kept_half = [r for r in rows if r["task"] == "rate_adherence" and r["ratio"] == 0.5 and not r.get("error")]
    assert kept_half and all(abs(r["achieved_rate"] - 0.5) < 0.1 for r in kept_half)  # its rate = kept fraction
    assert "**failed** (llmlingua llmlingua, rate_adherence)" in page.read_text()
    bench.run()  # resumed: the peer is not asked again
    assert len([r for r in RowStore(config.out).rows() if r["system"] == "llmlingua"]) == len(rows)


def test_wiki_summary_compresses_the_body_and_reads_the_lead(tmp_path, data, word_tokenizer):
    from tokensift.text.tasks import wiki_summary_instances

    wiki = data / "wikitext2"
    wiki.mkdir()
    article = (
        " = The Cat = \r\n \r\n the cat sat on the mat @-@ red , big . \r\n \r\n = = Life = = \r\n \r\n"
        + "".join(f" {sentence_text(20, k)} . \r\n \r\n" for k in range(4))
    )
    (wiki / "wiki.test.raw").write_text(article * 2 + " = Stub = \r\n \r\n no body here . \r\n")
    found = wiki_summary_instances(data, 2, word_tokenizer)
    assert [i.sample_id for i in found] == ["wiki-0", "wiki-1"]
    assert found[0].probes[0]["target"] == "the cat sat on the mat-red, big."
    assert "= =" not in found[0].prompt and "the cat sat on the mat" not in found[0].prompt
    with pytest.raises(ParameterError, match="2 articles with a lead and a body"):
        wiki_summary_instances(data, 3, word_tokenizer)
    config = TextBenchConfig(
        out=tmp_path / "out", model="tiny", methods=("random",), ratios=(0.5,), samples=2,
        tasks=("wiki_summary",), data_dir=data,
    )  # fmt: skip
    run_bench(config, scorer(word_tokenizer))
    rows = [r for r in RowStore(config.out).rows() if r["method"] == "random"]
    assert len(rows) == 2 and all("logprob_delta" in r and r["cut_units"] == 0 for r in rows)
