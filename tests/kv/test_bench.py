import functools
import gzip
import json
import uuid
from types import SimpleNamespace

import pytest
import torch

from tests.conftest import tiny_kvzap, tiny_llama
from tokensift.bench import RowStore
from tokensift.errors import ParameterError
from tokensift.kv.api import press_from
from tokensift.kv.bench import KVBenchConfig, KVBenchmark, prefill, run_sample, variants, work
from tokensift.kv.tasks import Sample, kv_retrieval, split_prompt, string_match
from tokensift.methods import names

WORDS = "the cat sat on the mat and the dog ran to the house . "


def _sample() -> Sample:
    return Sample(
        "niah",
        "s0",
        WORDS * 3 + "one two three . " + WORDS * 3,
        question="what ?",
        answer_prefix="the",
        answers=["two"],
        max_new_tokens=3,
    )


def test_split_prompt_keeps_the_question_out_unless_query_aware(word_tokenizer):
    sample = _sample()
    head, tail = split_prompt(word_tokenizer, sample, query_aware=False)
    aware_head, aware_tail = split_prompt(word_tokenizer, sample, query_aware=True)
    assert head + tail == aware_head + aware_tail
    assert len(aware_tail) == 1 and len(tail) == 3  # "what ?" moves into the compressed part


def test_string_match_is_case_and_punctuation_blind():
    sample = Sample("niah", "x", "", answers=["4817263"])
    assert string_match(" 4817263.", sample) == (True, 1.0)
    multi = Sample("niah_multivalue", "x", "", answers=["12", "34"], match_all=True)
    assert string_match("12 and 56", multi) == (False, 0.5)


def test_run_sample_writes_one_row_per_variant_and_resumes(tmp_path, word_tokenizer):
    llama = tiny_llama(context=256)  # room for kvzip's repeat pass after the context
    methods, ratios = names("kv", stage="cache"), [0.5, 0.75]
    store = RowStore(tmp_path)
    base = {"system": "tokensift", "target": "kv", "model": "tiny"}
    sample = _sample()
    source = functools.partial(variants, model=llama, tokenizer=word_tokenizer, options={"weights": tiny_kvzap()})
    args = (llama, word_tokenizer, sample, "query-agnostic", methods, ratios, store, base, source)
    assert run_sample(*args) == 1 + 2 * len(methods)
    assert run_sample(*args) == 0
    rows = {(r["method"], r["ratio"]): r for r in store.rows()}
    assert rows[("full", 0.0)]["kept_fraction"] == 1.0
    for (method, ratio), row in rows.items():
        if method == "full" or press_from(method, ratio=0.5, tokenizer=word_tokenizer).evicts:
            assert row["kept_fraction"] == pytest.approx(1 - ratio, abs=0.02), method
        elif method == "qprune":  # the kept tokens, all packed at 4 bits, and nothing for the rest
            assert 0 < row["kept_fraction"] < 1 - ratio, method
        else:  # packed or merged: the kept tokens plus what stands for the rest
            assert row["kept_fraction"] >= 1 - ratio, method
    assert work(["niah"], ["query-agnostic", "query-aware"], 1) == [
        ("niah", 0, "query-agnostic"),
        ("niah", 0, "query-aware"),
    ]


def test_decode_speed_times_every_method_at_every_ratio_once(tmp_path, word_tokenizer):
    (tmp_path / "pg_essays").mkdir()
    (tmp_path / "pg_essays" / "essay.txt").write_text(WORDS * 20, encoding="utf-8")
    config = KVBenchConfig(
        out=tmp_path, model="tiny", tasks=(), methods=("knorm", "streaming_llm"), ratios=(0.5, 0.75), samples=0,
        data_dir=tmp_path, speed_length=64, speed_tokens=3,
    )  # fmt: skip
    bench = KVBenchmark(config)
    bench.loaded = SimpleNamespace(model=tiny_llama(context=256), tokenizer=word_tokenizer)
    page = bench.run()
    assert page == tmp_path / "report.md" and "KV-cache compression · tiny" in page.read_text()
    store = RowStore(tmp_path)
    rows = {(r["method"], r["ratio"]): r for r in store.rows()}
    assert sorted(rows) == [
        ("full", 0.0),
        ("knorm", 0.5),
        ("knorm", 0.75),
        ("streaming_llm", 0.5),
        ("streaming_llm", 0.75),
    ]
    full = rows[("full", 0.0)]["cache_bytes"]
    for (method, ratio), row in rows.items():
        assert row["decoded_tokens"] == 3 and row["decode_s_per_token"] > 0
        assert row["cache_bytes"] == pytest.approx((1 - ratio) * full, rel=0.05), method
    bench.run()
    assert len(RowStore(tmp_path).rows()) == 5


def test_kv_retrieval_leaves_room_for_a_whole_uuid_even_one_token_per_character(tmp_path):
    pairs = [[str(uuid.UUID(int=i)), str(uuid.UUID(int=1000 + i))] for i in range(12)]
    record = {"key": pairs[3][0], "value": pairs[3][1], "ordered_kv_records": pairs}
    folder = tmp_path / "lost_in_the_middle"
    folder.mkdir()
    (folder / "kv-retrieval-75_keys.jsonl.gz").write_bytes(gzip.compress(json.dumps(record).encode()))
    sample = kv_retrieval(tmp_path, 0, 0, pairs=10)
    assert sample.answers == [pairs[3][1]] and f'"{pairs[3][0]}": "{pairs[3][1]}"' in sample.context
    assert sample.max_new_tokens >= len(sample.answers[0]) == 36


def test_a_bytes_budget_gives_every_method_the_same_memory(tmp_path, word_tokenizer):
    llama = tiny_llama(context=256)
    store = RowStore(tmp_path)
    base = {"system": "tokensift", "target": "kv", "model": "tiny"}
    methods = ["knorm", "quant2:knorm", "merge:knorm"]
    run_sample(llama, word_tokenizer, _sample(), "query-agnostic", methods, [0.5, 0.9], store, base, budget="bytes")
    rows = {(r["method"], r["ratio"]): r for r in store.rows()}
    for method in methods:  # half of the full cache's bytes, however each method stores what it keeps
        assert rows[(method, 0.5)]["kept_fraction"] == pytest.approx(0.5, abs=0.05), method
        assert rows[(method, 0.5)]["budget"] == "bytes"
    assert rows[("quant2:knorm", 0.5)]["token_ratio"] > 0.5  # packing the rest costs bytes: fewer tokens kept whole
    assert ("quant2:knorm", 0.9) not in rows  # 2-bit codes of every token alone exceed 10 % (head dim 8): no row
    assert rows[("knorm", 0.9)]["kept_fraction"] == pytest.approx(0.1, abs=0.03)


def test_method_options_reach_the_methods_that_take_them_and_bad_ones_are_typed_errors(
    tmp_path, word_tokenizer, monkeypatch
):
    def config(**options):
        return KVBenchConfig(
            out=tmp_path, model="tiny", tasks=(), methods=("knorm", "kvzip"), ratios=(0.5,), samples=0,
            data_dir=tmp_path, speed_tokens=0, options=options,
        )  # fmt: skip

    bench = KVBenchmark(config(pass_dtype="bfloat16"))
    bench.check()
    assert bench.method_options == {"pass_dtype": "bfloat16"}
    assert any("method options: pass_dtype=bfloat16" in line for line in bench.notes([]))
    seen = []

    def probe_views(model, press, views, ids):  # records the press; any scores will do
        seen.append(press)
        for view in views.values():
            view.probe_scores = [torch.rand(view.kv_heads, view.n)]

    monkeypatch.setattr("tokensift.kv.bench.probe_views", probe_views)
    llama = tiny_llama(context=256)
    pre = prefill(llama, word_tokenizer(WORDS * 3).input_ids)
    options = bench.method_options
    wanted = list(variants(pre, ["knorm", "kvzip"], [0.5], lambda m, r: True, model=llama, options=options))
    assert [v.method for v in wanted] == ["knorm", "kvzip"]
    assert [p.scorer.pass_dtype for p in seen] == ["bfloat16"]  # knorm does not take it and never sees it
    with pytest.raises(ParameterError, match="pass_dtype"):
        KVBenchmark(config(pass_dtype="float8")).check()
    with pytest.raises(ParameterError, match="no method of this run takes the option 'windw'"):
        KVBenchmark(config(windw=3)).check()
