"""``tokensift bench encoder``: methods x removal ratios on a sentence encoder, on real text.

Tasks (rows per sample, stored resumably with :class:`tokensift.bench.RowStore`):

* ``nq_retrieval``: NaturalQuestions-Open questions retrieve their gold passage among all gold passages
  (>= 1,000) by cosine; recall@1/@10 with reduced passage embeddings and full query embeddings (mode
  ``corpus``, the indexing use case) or both reduced (mode ``both``).
* ``nq_fidelity`` / ``wikitext_fidelity``: cosine between reduced and full embeddings of each passage /
  WikiText-2 sentence, with kept tokens, tokens per layer and a FLOPs estimate.
* ``speed``: embeddings per second at batch 32 and batch 1 (tokenisation included, best of the runs),
  each next to a full-model timing taken just before it, so the speed-up is robust to a shared CPU.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tokensift.bench import KEY_FIELDS, RowStore, summarize, write_report
from tokensift.encoder.embed import EmbedResult, max_length_for, sentence_embeddings
from tokensift.encoder.schedule import Schedule
from tokensift.errors import InputFileError
from tokensift.inputs import data_dir as find_data_dir

FULL = "none"
"""Method name of the unreduced model's rows (ratio 0)."""


@dataclass(frozen=True)
class BenchConfig:
    """What one benchmark run covers."""

    model: str = "minilm-l6"
    methods: tuple[str, ...] | None = None
    ratios: tuple[float, ...] = (0.25, 0.5, 0.65)
    passages: int = 1000
    sentences: int = 300
    speed_texts: int = 32
    threads: int = 2
    batch_size: int = 32
    seed: int = 0


@dataclass
class BenchData:
    """Questions with the corpus index of their gold passage, the corpus, and WikiText sentences."""

    questions: list[str]
    gold: list[int]
    corpus: list[str]
    sentences: list[str]
    question_ids: list[str] = field(default_factory=list)


def load_nq(folder: Path, passages: int) -> tuple[list[str], list[str], list[int], list[str]]:
    """Questions (ids, texts), each one's gold passage index, and the corpus of unique gold passages
    (``title`` newline ``text``), read until the corpus holds ``passages`` passages."""
    path = folder / "lost_in_the_middle" / "nq-open-oracle.jsonl.gz"
    if not path.is_file():
        raise InputFileError(f"NaturalQuestions-Open data not found: {path}")
    ids: list[str] = []
    questions: list[str] = []
    gold: list[int] = []
    corpus: list[str] = []
    index: dict[str, int] = {}
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            record = json.loads(line)
            ctx = next((c for c in record["ctxs"] if c.get("isgold")), None)
            if ctx is None:
                continue
            passage = f"{ctx['title']}\n{ctx['text']}"
            if passage not in index:
                if len(corpus) == passages:
                    break
                index[passage] = len(corpus)
                corpus.append(passage)
            ids.append(f"nq-{number}")
            questions.append(record["question"])
            gold.append(index[passage])
    return ids, questions, gold, corpus


_WIKI_MARKUP = {" @-@ ": "-", " @,@ ": ",", " @.@ ": "."}


def load_wikitext(folder: Path, count: int, seed: int) -> list[str]:
    """``count`` WikiText-2 test sentences of 8-60 words (headings skipped, markup undone), sampled."""
    path = folder / "wikitext2" / "wiki.test.raw"
    if not path.is_file():
        raise InputFileError(f"WikiText-2 data not found: {path}")
    sentences = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("="):
            continue
        for old, new in _WIKI_MARKUP.items():
            line = line.replace(old, new)
        for sentence in re.split(r"(?<= \.) ", line):
            if 8 <= len(sentence.split()) <= 60:
                sentences.append(sentence.strip())
    return random.Random(seed).sample(sentences, min(count, len(sentences)))


class _Runner:
    """Embeds with one method and ratio, and times embedding."""

    def __init__(self, loaded: Any, config: BenchConfig, data: BenchData) -> None:
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.config = config
        self.data = data
        self.max_length = max_length_for(self.tokenizer, self.model, loaded.path)

    def embed(self, texts: Sequence[str], method: str, ratio: float, batch_size: int | None = None) -> EmbedResult:
        return sentence_embeddings(
            self.model,
            self.tokenizer,
            texts,
            method=None if method == FULL else method,
            schedule=None if method == FULL else Schedule(ratio=ratio),
            batch_size=batch_size or self.config.batch_size,
            max_length=self.max_length,
            truncate=True,
        )

    def speed(self, texts: Sequence[str], method: str, ratio: float, batch_size: int, runs: int = 2) -> float:
        """Embeddings per second, the best of ``runs`` runs."""
        best = float("inf")
        for _ in range(runs):
            start = time.perf_counter()
            self.embed(texts, method, ratio, batch_size)
            best = min(best, time.perf_counter() - start)
        return len(texts) / best


def _cost(result: EmbedResult, full: EmbedResult, i: int) -> dict[str, Any]:
    return {
        "tokens": int(full.tokens[i]),
        "kept_fraction": float(result.kept[i] / result.tokens[i]),
        "flops_fraction": float(result.flops[i] / full.flops[i]),
    }


def _layer_fractions(result: EmbedResult) -> dict[str, float]:
    fractions = result.layer_tokens.sum(axis=0) / result.tokens.sum()
    return {f"tokens_l{i}": float(x) for i, x in enumerate(fractions)}


def _layer_fields(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({k for r in rows for k in r if k.startswith("tokens_l")}, key=lambda k: int(k[len("tokens_l") :]))


def _gold_ranks(queries: np.ndarray, corpus: np.ndarray, gold: Sequence[int]) -> np.ndarray:
    scores = queries @ corpus.T
    gold_scores = scores[np.arange(len(gold)), np.asarray(gold)]
    return (scores > gold_scores[:, None]).sum(axis=1) + 1


def _cell_rows(
    runner: _Runner, data: BenchData, full: dict[str, EmbedResult], method: str, ratio: float, base: dict[str, Any]
) -> list[dict[str, Any]]:
    """All rows of one (method, ratio): retrieval, passage and sentence fidelity, speed."""
    reduced = full if method == FULL else {name: runner.embed(texts, method, ratio) for name, texts in _sets(data)}
    rows = []
    passages, questions = reduced["corpus"], reduced["questions"]
    for mode, query in (("corpus", full["questions"]), ("both", questions)):
        ranks = _gold_ranks(query.embeddings, passages.embeddings, data.gold)
        for i, rank in enumerate(ranks):
            g = data.gold[i]
            rows.append(
                {
                    **base,
                    "task": "nq_retrieval",
                    "mode": mode,
                    "sample_id": data.question_ids[i],
                    "gold_rank": int(rank),
                    "recall_at_1": bool(rank <= 1),
                    "recall_at_10": bool(rank <= 10),
                    **_cost(passages, full["corpus"], g),
                }
            )
    for task, mode, name, prefix in (
        ("nq_fidelity", "passage", "corpus", "p"),
        ("wikitext_fidelity", "sentence", "sentences", "s"),
    ):
        result, reference = reduced[name], full[name]
        cosines = (result.embeddings * reference.embeddings).sum(axis=1)
        for i, cosine in enumerate(cosines):
            rows.append(
                {
                    **base,
                    "task": task,
                    "mode": mode,
                    "sample_id": f"{prefix}{i}",
                    "cosine": float(cosine),
                    **_cost(result, reference, i),
                }
            )
    return rows + _speed_rows(runner, full["corpus"], reduced["corpus"], method, ratio, base)


def _sets(data: BenchData) -> list[tuple[str, list[str]]]:
    return [("corpus", data.corpus), ("questions", data.questions), ("sentences", data.sentences)]


def _speed_rows(
    runner: _Runner, full: EmbedResult, reduced: EmbedResult, method: str, ratio: float, base: dict[str, Any]
) -> list[dict[str, Any]]:
    """Embeddings/s at batch 32 and 1 on the first corpus passages, each next to a full-model timing.

    Kept tokens, FLOPs and tokens per layer of the timed passages come from the corpus run (same texts).
    """
    rows = []
    count = runner.config.speed_texts
    for mode, batch, n in (("batch32", runner.config.batch_size, count), ("batch1", 1, max(1, count // 4))):
        texts = runner.data.corpus[:n]
        full_speed = runner.speed(texts, FULL, 0.0, batch)
        speed = full_speed if method == FULL else runner.speed(texts, method, ratio, batch)
        tokens = reduced.tokens[:n].sum()
        rows.append(
            {
                **base,
                "task": "speed",
                "mode": mode,
                "sample_id": f"{n}-passages",
                "embeddings_per_s": speed,
                "full_embeddings_per_s": full_speed,
                "speedup": speed / full_speed,
                "kept_fraction": float(reduced.kept[:n].sum() / tokens),
                "flops_fraction": float(reduced.flops[:n].sum() / full.flops[:n].sum()),
                **{f"tokens_l{i}": float(x / tokens) for i, x in enumerate(reduced.layer_tokens[:n].sum(axis=0))},
            }
        )
    return rows


def _full_embeddings(runner: _Runner, data: BenchData, cache: Path) -> dict[str, EmbedResult]:
    """The unreduced embeddings every cell is compared with (kept in ``cache`` for resumed runs)."""
    results = {}
    for name, texts in _sets(data):
        path = cache / f"full-{name}-{len(texts)}.npz"
        if path.is_file():
            stored = np.load(path)
            results[name] = EmbedResult(**{k: stored[k] for k in stored.files}, truncated=[])
            continue
        result = runner.embed(texts, FULL, 0.0)
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **{k: v for k, v in result.__dict__.items() if k != "truncated"})
        os.replace(tmp, path)
        results[name] = result
    return results


def run_bench(
    config: BenchConfig,
    out_dir: Path,
    *,
    data_dir: Path | None = None,
    results: Path | None = None,
    cache_dir: Path | None = None,
    report_only: bool = False,
    command: str = "",
) -> Path:
    """Run (or resume) the benchmark into ``out_dir``; write the report (and ``results``); return its path.

    ``report_only`` reports the rows stored so far and computes nothing; cells without rows are listed."""
    from tokensift.methods import get_method, list_methods
    from tokensift.models import load_model
    from tokensift.report.progress import progress_bar

    methods = config.methods or tuple(m.name for m in list_methods("encoder"))
    for name in methods:
        get_method(name, "encoder")
    folder = find_data_dir(data_dir)
    if folder is None:
        raise InputFileError("no evaluation data: pass --data-dir or set $TOKENSIFT_DATA (see ../shared/data)")
    torch.set_num_threads(config.threads)
    ids, questions, gold, corpus = load_nq(folder, config.passages)
    data = BenchData(questions, gold, corpus, load_wikitext(folder, config.sentences, config.seed), ids)
    loaded = load_model(config.model, cache_dir=cache_dir)
    runner = _Runner(loaded, config, data)
    store = RowStore(out_dir)
    cells = [(FULL, 0.0)] + [(m, r) for m in methods for r in config.ratios]
    with progress_bar() as bar:
        task = bar.add_task("full embeddings", total=len(cells))
        full = {} if report_only else _full_embeddings(runner, data, out_dir / "cache")
        for method, ratio in cells:
            bar.update(task, description=f"{method} ratio {ratio:g}")
            base = {"system": "tokensift", "target": "encoder", "model": loaded.name, "method": method, "ratio": ratio}
            if not report_only and not store.has(
                **base, task="speed", mode="batch1", sample_id=f"{max(1, config.speed_texts // 4)}-passages"
            ):
                for row in _cell_rows(runner, data, full, method, ratio, base):
                    if not report_only and not store.has(**{k: row[k] for k in KEY_FIELDS}):
                        store.append(row)
            bar.advance(task)
    rows = store.rows()
    done = {(r["method"], float(r["ratio"])) for r in rows if r["task"] == "speed"}
    missing = [f"{m} {r:g}" for m, r in cells if (m, r) not in done]
    return _report(rows, config, data, out_dir, results, command or _command(config, out_dir, results), missing)


def _command(config: BenchConfig, out_dir: Path, results: Path | None) -> str:
    parts = [f"tokensift bench encoder --out {out_dir}", f"--model {config.model}"]
    if config.methods:
        parts.append(f"--methods {','.join(config.methods)}")
    parts += [
        f"--ratios {','.join(f'{r:g}' for r in config.ratios)}",
        f"--passages {config.passages} --sentences {config.sentences} --speed-texts {config.speed_texts}",
        f"--threads {config.threads}",
    ]
    if results is not None:
        parts.append(f"--results {results}")
    return " ".join(parts)


def _headline(rows: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """A compact table (one line per method and ratio) and the goal check."""
    cells: dict[tuple[str, float], dict[str, float]] = {}
    for record in summarize(rows):
        key = (record["method"], float(record["ratio"]))
        metrics = cells.setdefault(key, {})
        for metric in ("recall_at_1", "recall_at_10", "cosine", "speedup", "embeddings_per_s", "flops_fraction"):
            if metric in record:
                metrics[f"{record['task']}/{record['mode']}/{metric}"] = record[metric]
    table = [
        "| method | ratio (keep) | emb/s b32 | speed-up b32 | speed-up b1 | FLOPs | cos NQ | cos Wiki | R@1 | R@10 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    full = cells.get((FULL, 0.0), {})
    met = []
    for (method, ratio), m in sorted(cells.items(), key=lambda kv: (kv[0][0] != FULL, kv[0])):

        def get(name: str, metrics: dict[str, float] = m) -> float:
            return metrics.get(name, float("nan"))

        table.append(
            f"| {method} | {ratio:g} ({1 - ratio:.0%}) | {get('speed/batch32/embeddings_per_s'):.1f}"
            f" | {get('speed/batch32/speedup'):.2f}× | {get('speed/batch1/speedup'):.2f}×"
            f" | {get('nq_fidelity/passage/flops_fraction'):.2f} | {get('nq_fidelity/passage/cosine'):.4f}"
            f" | {get('wikitext_fidelity/sentence/cosine'):.4f} | {100 * get('nq_retrieval/corpus/recall_at_1'):.1f}"
            f" | {100 * get('nq_retrieval/corpus/recall_at_10'):.1f} |"
        )
        full_r10 = full.get("nq_retrieval/corpus/recall_at_10", float("nan"))
        if (
            method != FULL
            and get("speed/batch32/speedup") >= 1.5
            and min(get("nq_fidelity/passage/cosine"), get("wikitext_fidelity/sentence/cosine")) >= 0.98
            and get("nq_retrieval/corpus/recall_at_10") >= full_r10 - 0.01
        ):
            met.append(f"{method} at ratio {ratio:g}")
    goal = (
        "**Goal** (>= 1.5x embeddings/s at batch 32, mean cosine >= 0.98 on both sets, recall@10 within 1 point"
        f" of full): {'met by ' + ', '.join(met) if met else 'not met by any method and ratio'}."
    )
    return table, [goal]


def _report(
    rows: list[dict[str, Any]],
    config: BenchConfig,
    data: BenchData,
    out_dir: Path,
    results: Path | None,
    command: str,
    missing: list[str],
) -> Path:
    notes = [
        f"all-MiniLM-L6-v2 ({config.model}), sentence-transformers embedding (mean pooling weighted by token sizes,"
        " L2-normalised); texts over 256 tokens truncated (explicitly, counted in the rows' tokens).",
        f"ratio = fraction of each text's tokens removed by the last layer, spread geometrically over the layers"
        f" (ratios {', '.join(f'{r:g}' for r in config.ratios)} keep"
        f" {', '.join(f'{1 - r:.0%}' for r in config.ratios)}); `none` is the unmodified model.",
        f"NQ retrieval: {len(data.questions)} questions, {len(data.corpus)} gold passages as the corpus; mode"
        " `corpus` = reduced passages, full queries; `both` = both reduced.",
        f"WikiText-2: {len(data.sentences)} test sentences. Speed: {config.speed_texts} passages at batch"
        f" {config.batch_size}, {max(1, config.speed_texts // 4)} at batch 1, {config.threads} torch threads,"
        " tokenisation included, best of 2 runs, each next to a full-model timing (speedup column).",
        "FLOPs: estimate from the real tokens each layer's attention and MLP process (reduction overhead excluded).",
    ]
    if missing:
        notes.append(f"**Not measured yet** (run the command again to resume): {', '.join(missing)}.")
    report = write_report(
        out_dir,
        rows,
        title="Encoder token reduction: all-MiniLM-L6-v2",
        command=command,
        quality={
            "nq_retrieval": "recall_at_10",
            "nq_fidelity": "cosine",
            "wikitext_fidelity": "cosine",
            "speed": "speedup",
        },
        cost=["recall_at_1", "embeddings_per_s", "kept_fraction", "flops_fraction", *_layer_fields(rows)],
        notes=notes,
    )
    if results is not None:
        table, goal = _headline(rows)
        body = report.read_text(encoding="utf-8")
        head, _, rest = body.partition("\n- ")
        link = os.path.relpath(out_dir / "plots", results.parent)
        summary = ["", "## Summary", "", *goal, "", *table, ""]
        text = head + "\n" + "\n".join(summary) + "\n- " + rest.replace("](plots/", f"]({link}/")
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(text, encoding="utf-8")
    return report
