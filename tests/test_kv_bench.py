import pytest

from tests.conftest import tiny_llama
from tokensift.bench import RowStore
from tokensift.kv.bench import BenchConfig, plan, run_sample
from tokensift.kv.tasks import Sample, split_prompt, string_match

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
