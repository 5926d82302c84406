"""KV compression on the embedded SmolLM2 (short inputs)."""

import json

import pytest
import torch
from typer.testing import CliRunner

from tokensift.cli import app
from tokensift.kv import press_from
from tokensift.kv.qa import answer, compress_context
from tokensift.kv.tasks import Sample, split_prompt

NEEDLE = "The special magic number is 4817263."
HAYSTACK = (
    "The river ran past the old mill, and the miller counted sacks of flour every morning before dawn. "
    "Nobody in the village remembered when the mill was built, only that it had always been there. "
) * 6


@pytest.fixture(scope="module")
def smollm():
    from tokensift.models import load_model

    return load_model("smollm2-135m")


def _sample() -> Sample:
    return Sample(
        "niah",
        "t",
        HAYSTACK + NEEDLE + " " + HAYSTACK,
        question="What is the special magic number mentioned in the text?",
        answer_prefix="The special magic number mentioned in the text is",
        answers=["4817263"],
    )


@pytest.mark.model
def test_full_and_compressed_cache_on_smollm2(smollm):
    model, tokenizer = smollm
    head, tail = split_prompt(tokenizer, _sample(), query_aware=False)
    results = {}
    for method, ratio in (("snapkv", 0.0), ("chunkkv", 0.5), ("adakv", 0.5)):
        context = compress_context(model, torch.tensor([head]), press_from(method, ratio=ratio))
        result = answer(model, context, torch.tensor([tail]), max_new_tokens=9)
        results[method] = tokenizer.decode(result.ids[0])
        if ratio:
            assert context.stats.kept_fraction == pytest.approx(1 - ratio, abs=0.02)
    assert "4817263" in results["snapkv"].replace(" ", "")


@pytest.mark.model
def test_kv_generate_cli(tmp_path):
    context = tmp_path / "context.txt"
    context.write_text(HAYSTACK + NEEDLE + " " + HAYSTACK)
    runner = CliRunner()
    args = ["kv", "generate", "--context", str(context), "-q", "What is the special magic number?"]
    result = runner.invoke(app, [*args, "--method", "snapkv", "--ratio", "0.5", "--query-aware", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["mode"] == "query-aware" and report["kept_fraction"] == pytest.approx(0.5, abs=0.02)
    assert report["cache_bytes_after"] < report["cache_bytes_before"]
    assert report["repeat_pass_dtype"] is None  # snapkv runs no repeat pass


@pytest.mark.model
def test_kvzip_keeps_the_needle_without_the_question_on_smollm2(smollm):
    model, tokenizer = smollm
    head, tail = split_prompt(tokenizer, _sample(), query_aware=False)
    press = press_from("kvzip", ratio=0.75, tokenizer=tokenizer)
    context = compress_context(model, torch.tensor([head]), press)
    result = answer(model, context, torch.tensor([tail]), max_new_tokens=9)
    assert "4817263" in tokenizer.decode(result.ids[0]).replace(" ", "")
    assert context.stats.kept_fraction == pytest.approx(0.25, abs=0.01)
    kept = [sum(rec.kept[0]) for rec in context.stats.layers]
    assert len(set(kept)) > 1  # one budget for the whole model: layers keep different amounts


@pytest.mark.model
def test_kv_generate_cli_with_kvzip_query_agnostic(tmp_path):
    context = tmp_path / "context.txt"
    context.write_text(HAYSTACK + NEEDLE + " " + HAYSTACK)
    args = ["kv", "generate", "--context", str(context), "-q", "What is the special magic number?", "--json"]
    result = CliRunner().invoke(app, [*args, "--method", "kvzip", "--ratio", "0.75"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["mode"] == "query-agnostic" and report["kept_fraction"] == pytest.approx(0.25, abs=0.01)
    from tokensift.kv.probe import fast_bf16

    assert report["repeat_pass_dtype"] == ("bfloat16" if fast_bf16(torch.device("cpu")) else "float32")


@pytest.mark.model
def test_kvzap_with_its_bundled_surrogate_keeps_most_of_kvzips_selection_on_smollm2(smollm):
    """The shipped surrogate on a context it was not fitted on: a model-wide, ragged 25 % cache; at least
    two thirds of the KV pairs kvzip keeps are kept by kvzap too (random would keep a quarter)."""
    from tokensift.kv.bench import prefill, variants

    model, tokenizer = smollm
    head, _ = split_prompt(tokenizer, _sample(), query_aware=False)
    context = compress_context(model, torch.tensor([head]), press_from("kvzap", ratio=0.75))
    assert context.stats.kept_fraction == pytest.approx(0.25, abs=0.01)
    assert len({sum(rec.kept[0]) for rec in context.stats.layers}) > 1
    pre = prefill(model, head, hidden=True)
    chosen = {v.method: v.selection for v in variants(pre, ["kvzip", "kvzap"], [0.75], lambda m, r: True,
                                                      model=model, tokenizer=tokenizer)}  # fmt: skip
    shared = total = 0
    for layer, heads in chosen["kvzip"].items():
        for h, kept in enumerate(heads):
            shared += len(set(kept.tolist()) & set(chosen["kvzap"][layer][h].tolist()))
            total += len(kept)
    assert shared / total > 2 / 3
