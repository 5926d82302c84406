"""``tokensift bench vision`` end to end on a tiny random LLaVA: rows, resume, report (real easy-VQA images)."""

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.conftest import word_level_tokenizer
from tests.vision.test_pipeline import tiny_llava
from tokensift.bench import summarize
from tokensift.errors import ParameterError
from tokensift.models import LoadedModel
from tokensift.models.vision import image_processor
from tokensift.vision.bench import (
    VisionBenchConfig,
    VisionBenchmark,
    image_labels,
    linear_probe,
    question_kind,
    vit_spec,
)


def config(tmp_path: Path, **extra) -> VisionBenchConfig:
    return VisionBenchConfig(
        out=tmp_path,
        methods=("fastervlm", "random", "fastv"),
        ratios=(0.75,),
        samples=4,
        vit_methods=("tome", "mctf", "tome@0-0"),
        vit_ratios=(0.5,),
        vit_size=28,
        probe_train=12,
        probe_test=6,
        speed_images=2,
        batch_size=2,
        **extra,
    )


def bench(cfg: VisionBenchConfig) -> VisionBenchmark:
    benchmark = VisionBenchmark(cfg)
    processor = SimpleNamespace(tokenizer=word_level_tokenizer(), image_processor=image_processor(28))
    benchmark.loaded = LoadedModel(tiny_llava(), processor.tokenizer, "tiny-llava", Path("."), None, 0.0, processor)
    return benchmark


def speed(record: dict) -> float:
    return float(record["prefill_speedup"]) if record["task"] == "vlm_speed" else 0.0


def test_rows_for_every_task_and_cell_then_resume(tmp_path):
    page = bench(config(tmp_path)).run()
    rows = [r for r in bench(config(tmp_path)).store.rows()]
    by_task = {t: [r for r in rows if r["task"] == t] for t in ("easyvqa", "vlm_speed", "vit_fidelity", "vit_probe")}
    assert len(by_task["easyvqa"]) == 4 * 4  # full + 3 methods x 1 ratio, 4 questions each
    assert {r["kept_tokens"] for r in by_task["easyvqa"] if r["method"] == "fastervlm"} == {4}  # 16 patches, 25 %
    assert {r["kept_tokens"] for r in by_task["easyvqa"] if r["method"] == "full"} == {16}
    # the word-level test tokenizer maps all 13 answers to <unk>: the closed-set pick is then the first, "circle"
    assert all(r["closed_correct"] == (r["gold"] == "circle") for r in by_task["easyvqa"])
    assert len(by_task["vlm_speed"]) == 4 * 3  # per cell: 2 questions alone, then both in one batch
    assert {r["mode"] for r in by_task["vlm_speed"]} == {"batch1", "batch2"}
    assert all(r["prefill_speedup"] > 0 for r in by_task["vlm_speed"])
    full_cos = [r["cosine"] for r in by_task["vit_fidelity"] if r["method"] == "full"]
    assert full_cos and all(abs(c - 1) < 1e-5 for c in full_cos)
    assert {r["mode"] for r in by_task["vit_probe"]} == {"shape", "color"}
    # the front-loaded row spends the whole budget in layer 0; every row says what share it keeps
    assert {r["method"] for r in by_task["vit_fidelity"]} == {"full", "tome", "mctf", "tome@0-0"}
    assert {r["kept_fraction"] for r in by_task["vit_fidelity"] if r["method"] == "tome@0-0"} == {0.5}
    assert {r["kept_fraction"] for r in by_task["vlm_speed"] if r["method"] == "random"} == {0.25}
    plots = {p.name for p in (tmp_path / "plots").iterdir()}
    for task, metric in (("easyvqa", "correct"), ("vlm_speed", "prefill_speedup"), ("vit_fidelity", "cosine")):
        assert f"{task}_{metric}_vs_kept_fraction.png" in plots
    text = page.read_text()
    assert "**Targets.**" in text and "**Target** (50 % merged" in text
    fastest = max((r for r in summarize(rows) if r["mode"] == "batch1" and r["method"] != "full"), key=speed)
    assert f"fastest {fastest['method']} {fastest['prefill_speedup']:.2f}×" in text
    assert "the language model's prefill alone, after the vision tower" in text
    # a second run finds every row stored and adds none
    again = bench(config(tmp_path))
    before = len(again.store.rows())
    again.run()
    assert len(again.store.rows()) == before


def test_bad_vit_options_are_typed_errors(tmp_path):
    with pytest.raises(ParameterError, match="vit ratio"):
        VisionBenchmark(dataclasses.replace(config(tmp_path), vit_ratios=(1.0,)))
    with pytest.raises(ParameterError, match="unknown encoder method"):
        VisionBenchmark(dataclasses.replace(config(tmp_path), vit_methods=("nope",)))
    for spec in ("tome@5-2", "tome@", "tome@a-b", "nope@0-1"):
        with pytest.raises(ParameterError):
            VisionBenchmark(dataclasses.replace(config(tmp_path), vit_methods=(spec,)))


def test_vit_spec():
    assert vit_spec("tome") == ("tome", None)
    assert vit_spec("tome@0-5") == ("tome", (0, 1, 2, 3, 4, 5))
    assert vit_spec("random@3") == ("random", (3,))


def test_labels_and_question_kinds():
    labels = image_labels("test")
    assert all(set(v) <= {"shape", "color"} for v in labels.values())
    assert question_kind("is there a red shape?", "no") == "yesno"
    assert question_kind("what shape is present?", "circle") == "shape"
    assert question_kind("what color is the shape?", "teal") == "color"


def test_linear_probe_separates_separable_classes():
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 8, generator=gen) * 5
    y = torch.arange(60) % 3
    x = centers[y] + torch.randn(60, 8, generator=gen)
    predicted = linear_probe(x[:45], y[:45].tolist(), x[45:], 3)
    assert predicted.tolist() == y[45:].tolist()
