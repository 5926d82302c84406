import gzip
import json
import uuid

import pytest

from tests.conftest import tiny_llama
from tokensift.bench import RowStore
from tokensift.kv.bench import BenchConfig, decode_speed, plan, run_sample
from tokensift.kv.tasks import Sample, kv_retrieval, split_prompt, string_match

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
    config = BenchConfig(
        model="tiny", tasks=["niah"], methods=["knorm", "chunkkv", "kvzip"], ratios=[0.5, 0.75], samples=1,
        seed=0,
        out=tmp_path, data=tmp_path,
    )  # fmt: skip
    store = RowStore(tmp_path)
    base = {"system": "tokensift", "target": "kv", "model": "tiny"}
    assert run_sample(llama, word_tokenizer, _sample(), "query-agnostic", config, store, base) == 7
    assert run_sample(llama, word_tokenizer, _sample(), "query-agnostic", config, store, base) == 0
    rows = {(r["method"], r["ratio"]): r for r in store.rows()}
    assert rows[("full", 0.0)]["kept_fraction"] == 1.0
    for (method, ratio), row in rows.items():
        assert row["kept_fraction"] == pytest.approx(1 - ratio, abs=0.02), method
    assert plan(config) == [("niah", 0, "query-agnostic"), ("niah", 0, "query-aware")]


def test_decode_speed_times_every_method_at_every_ratio_once(tmp_path, word_tokenizer):
    (tmp_path / "pg_essays").mkdir()
    (tmp_path / "pg_essays" / "essay.txt").write_text(WORDS * 20, encoding="utf-8")
    config = BenchConfig(
        model="tiny", tasks=[], methods=["knorm", "streaming_llm"], ratios=[0.5, 0.75], samples=0, seed=0,
        out=tmp_path, data=tmp_path, speed_length=64, speed_tokens=3,
    )  # fmt: skip
    store = RowStore(tmp_path)
    base = {"system": "tokensift", "target": "kv", "model": "tiny"}
    decode_speed(tiny_llama(context=256), word_tokenizer, config, store, base)
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
    decode_speed(tiny_llama(context=256), word_tokenizer, config, store, base)
    assert len(store.rows()) == 5


def test_kv_retrieval_leaves_room_for_a_whole_uuid_even_one_token_per_character(tmp_path):
    pairs = [[str(uuid.UUID(int=i)), str(uuid.UUID(int=1000 + i))] for i in range(12)]
    record = {"key": pairs[3][0], "value": pairs[3][1], "ordered_kv_records": pairs}
    folder = tmp_path / "lost_in_the_middle"
    folder.mkdir()
    (folder / "kv-retrieval-75_keys.jsonl.gz").write_bytes(gzip.compress(json.dumps(record).encode()))
    sample = kv_retrieval(tmp_path, 0, 0, pairs=10)
    assert sample.answers == [pairs[3][1]] and f'"{pairs[3][0]}": "{pairs[3][1]}"' in sample.context
    assert sample.max_new_tokens >= len(sample.answers[0]) == 36
