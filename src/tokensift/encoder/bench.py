"""``tokensift bench encoder``: the encoder target's tasks and metrics on the shared benchmark skeleton.

Tasks (rows per sample, stored resumably with :class:`tokensift.bench.RowStore`):

* ``nq_retrieval``: NaturalQuestions-Open questions retrieve their gold passage among all gold passages
  (>= 1,000) by cosine; recall@1/@10 with reduced passage embeddings and full query embeddings (mode
  ``corpus``, the indexing use case) or both reduced (mode ``both``).
* ``nq_fidelity`` / ``wikitext_fidelity``: cosine between reduced and full embeddings of each passage /
  WikiText-2 sentence (``--samples`` of them), with kept tokens, tokens per layer and a FLOPs estimate.
* ``speed``: embeddings per second at batch 32 and batch 1 (tokenisation included, best of the runs),
  each next to a full-model timing taken just before it, so the speed-up is robust to a shared CPU.
"""

from __future__ import annotations

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

from tokensift.bench import FULL, BenchConfig, Benchmark, WorkItem, summarize
from tokensift.bench import data as files
from tokensift.encoder.embed import EmbedResult, max_length_for, sentence_embeddings
from tokensift.encoder.schedule import Schedule
from tokensift.inputs import whole_number

QUALITY = {
    "nq_retrieval": "recall_at_10",
    "nq_fidelity": "cosine",
    "wikitext_fidelity": "cosine",
    "speed": "speedup",
}
SETS = {"nq_retrieval": ("corpus", "questions"), "nq_fidelity": ("corpus",), "wikitext_fidelity": ("sentences",)}
"""Which texts each task embeds (speed times the corpus)."""


@dataclass
class EncoderBenchConfig(BenchConfig):
    """``tokensift bench encoder``: the shared fields (``samples`` = WikiText-2 sentences) plus the retrieval
    corpus and the speed settings."""

    passages: int = 1000
    """NQ-Open gold passages in the retrieval corpus (their questions are the queries)."""
    speed_texts: int = 32
    threads: int = 2
    batch_size: int = 32


@dataclass
class BenchData:
    """Questions with the corpus index of their gold passage, the corpus, and WikiText sentences."""

    questions: list[str]
    gold: list[int]
    corpus: list[str]
    sentences: list[str]
    question_ids: list[str] = field(default_factory=list)

    def texts(self, name: str) -> list[str]:
        return {"corpus": self.corpus, "questions": self.questions, "sentences": self.sentences}[name]


def load_nq(folder: Path, passages: int) -> tuple[list[str], list[str], list[int], list[str]]:
    """Questions (ids, texts), each one's gold passage index, and the corpus of unique gold passages
    (``title`` newline ``text``), read until the corpus holds ``passages`` passages."""
    ids: list[str] = []
    questions: list[str] = []
    gold: list[int] = []
    corpus: list[str] = []
    index: dict[str, int] = {}
    for number, record in enumerate(files.nq_open(folder)):
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
    sentences = []
    for line in files.wikitext(folder).splitlines():
        line = line.strip()
        if not line or line.startswith("="):
            continue
        for old, new in _WIKI_MARKUP.items():
            line = line.replace(old, new)
        for sentence in re.split(r"(?<= \.) ", line):
            if 8 <= len(sentence.split()) <= 60:
                sentences.append(sentence.strip())
    return random.Random(seed).sample(sentences, min(count, len(sentences)))


def _cost(result: EmbedResult, full: EmbedResult, i: int) -> dict[str, Any]:
    return {
        "tokens": int(full.tokens[i]),
        "kept_fraction": float(result.kept[i] / result.tokens[i]),
        "flops_fraction": float(result.flops[i] / full.flops[i]),
    }


def _layer_fields(rows: Sequence[dict[str, Any]]) -> list[str]:
    return sorted({k for r in rows for k in r if k.startswith("tokens_l")}, key=lambda k: int(k[len("tokens_l") :]))


def _gold_ranks(queries: np.ndarray, corpus: np.ndarray, gold: Sequence[int]) -> np.ndarray:
    scores = queries @ corpus.T
    gold_scores = scores[np.arange(len(gold)), np.asarray(gold)]
    return (scores > gold_scores[:, None]).sum(axis=1) + 1


class EncoderBenchmark(Benchmark):
    """Sentence-encoder token reduction: retrieval, cosine fidelity and embeddings/s, one cell per method and ratio."""

    target = "encoder"
    heading = "Encoder token reduction"
    config_class = EncoderBenchConfig
    quality = QUALITY
    cost = ("recall_at_1", "embeddings_per_s", "kept_fraction", "flops_fraction")
    needs = dict.fromkeys(QUALITY, ("lost_in_the_middle/nq-open-oracle.jsonl.gz", "wikitext2/wiki.test.raw"))
    """Every cell embeds the NQ passages and the WikiText-2 sentences once in full (the reference)."""
    default_model = "minilm-l6"
    default_tasks = tuple(QUALITY)
    default_ratios = (0.25, 0.5, 0.65)
    default_samples = 300
    config: EncoderBenchConfig

    def check(self) -> None:
        super().check()
        for name in ("passages", "speed_texts", "threads", "batch_size"):
            whole_number(getattr(self.config, name), name)

    def cells(self) -> list[tuple[str, float]]:
        return [(FULL, 0.0)] + [(m, r) for m in self.methods for r in self.ratios]

    def setup(self) -> None:
        assert self.data is not None
        torch.set_num_threads(self.config.threads)
        ids, questions, gold, corpus = load_nq(self.data, self.config.passages)
        sentences = load_wikitext(self.data, self.samples, self.config.seed)
        self.texts = BenchData(questions, gold, corpus, sentences, ids)
        self.model, self.tokenizer = self.loaded.model, self.loaded.tokenizer
        self.max_length = max_length_for(self.tokenizer, self.model, self.loaded.path)
        self.full = self._full_embeddings(self.config.out / "cache")

    def plan(self) -> list[WorkItem]:
        return [WorkItem(f"{m} ratio {r:g}", (m, r)) for m, r in self.cells()]

    def _last_keys(self, method: str, ratio: float) -> list[dict[str, Any]]:
        """The key of the last row each task writes for a cell (present: the cell is done)."""
        last = {
            "nq_retrieval": ("both", self.texts.question_ids[-1] if self.texts.question_ids else ""),
            "nq_fidelity": ("passage", f"p{len(self.texts.corpus) - 1}"),
            "wikitext_fidelity": ("sentence", f"s{len(self.texts.sentences) - 1}"),
            "speed": ("batch1", f"{max(1, self.config.speed_texts // 4)}-passages"),
        }
        return [self.key(task, last[task][0], method, ratio, last[task][1]) for task in self.tasks]

    def run_item(self, item: WorkItem) -> None:
        method, ratio = item.args
        if all(self.has(**key) for key in self._last_keys(method, ratio)):
            return
        names = sorted({name for task in self.tasks for name in SETS.get(task, ("corpus",))})
        reduced = (
            self.full if method == FULL else {name: self.embed(self.texts.texts(name), method, ratio) for name in names}
        )
        rows: list[dict[str, Any]] = []
        if "nq_retrieval" in self.tasks:
            rows += self._retrieval(reduced, method, ratio)
        for task, mode, name, prefix in (
            ("nq_fidelity", "passage", "corpus", "p"),
            ("wikitext_fidelity", "sentence", "sentences", "s"),
        ):
            if task in self.tasks:
                rows += self._fidelity(task, mode, name, prefix, reduced, method, ratio)
        if "speed" in self.tasks:
            rows += self._speed_rows(reduced["corpus"], method, ratio)
        for row in rows:
            self.store.append(row)

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

    def _retrieval(self, reduced: dict[str, EmbedResult], method: str, ratio: float) -> list[dict[str, Any]]:
        rows = []
        passages, data = reduced["corpus"], self.texts
        for mode, query in (("corpus", self.full["questions"]), ("both", reduced["questions"])):
            ranks = _gold_ranks(query.embeddings, passages.embeddings, data.gold)
            for i, rank in enumerate(ranks):
                rows.append(
                    {
                        **self.key("nq_retrieval", mode, method, ratio, data.question_ids[i]),
                        "gold_rank": int(rank),
                        "recall_at_1": bool(rank <= 1),
                        "recall_at_10": bool(rank <= 10),
                        **_cost(passages, self.full["corpus"], data.gold[i]),
                    }
                )
        return rows

    def _fidelity(
        self, task: str, mode: str, name: str, prefix: str, reduced: dict[str, EmbedResult], method: str, ratio: float
    ) -> list[dict[str, Any]]:
        result, reference = reduced[name], self.full[name]
        cosines = (result.embeddings * reference.embeddings).sum(axis=1)
        return [
            {
                **self.key(task, mode, method, ratio, f"{prefix}{i}"),
                "cosine": float(cosine),
                **_cost(result, reference, i),
            }
            for i, cosine in enumerate(cosines)
        ]

    def _speed_rows(self, reduced: EmbedResult, method: str, ratio: float) -> list[dict[str, Any]]:
        """Embeddings/s at batch 32 and 1 on the first corpus passages, each next to a full-model timing.

        Kept tokens, FLOPs and tokens per layer of the timed passages come from the corpus run (same texts).
        """
        rows = []
        count, full = self.config.speed_texts, self.full["corpus"]
        for mode, batch, n in (("batch32", self.config.batch_size, count), ("batch1", 1, max(1, count // 4))):
            texts = self.texts.corpus[:n]
            full_speed = self.speed(texts, FULL, 0.0, batch)
            speed = full_speed if method == FULL else self.speed(texts, method, ratio, batch)
            tokens = reduced.tokens[:n].sum()
            rows.append(
                {
                    **self.key("speed", mode, method, ratio, f"{n}-passages"),
                    "embeddings_per_s": speed,
                    "full_embeddings_per_s": full_speed,
                    "speedup": speed / full_speed,
                    "kept_fraction": float(reduced.kept[:n].sum() / tokens),
                    "flops_fraction": float(reduced.flops[:n].sum() / full.flops[:n].sum()),
                    **{f"tokens_l{i}": float(x / tokens) for i, x in enumerate(reduced.layer_tokens[:n].sum(axis=0))},
                }
            )
        return rows

    def _full_embeddings(self, cache: Path) -> dict[str, EmbedResult]:
        """The unreduced embeddings every cell is compared with (kept in ``cache`` for resumed runs)."""
        results = {}
        for name in ("corpus", "questions", "sentences"):
            texts = self.texts.texts(name)
            path = cache / f"full-{name}-{len(texts)}.npz"
            if path.is_file():
                stored = np.load(path)
                results[name] = EmbedResult(**{k: stored[k] for k in stored.files}, truncated=[])
                continue
            result = self.embed(texts, FULL, 0.0)
            cache.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, **{k: v for k, v in result.__dict__.items() if k != "truncated"})
            os.replace(tmp, path)
            results[name] = result
        return results

    def notes(self, rows: Sequence[dict[str, Any]]) -> list[str]:
        ratios = self.ratios
        notes = [
            f"{self.model_name} sentence-transformers embedding (mean pooling weighted by token sizes, L2-normalised);"
            " texts longer than the model takes are truncated (explicitly, counted in the rows' tokens).",
            f"ratio = fraction of each text's tokens removed by the last layer, spread geometrically over the layers"
            f" (ratios {', '.join(f'{r:g}' for r in ratios)} keep {', '.join(f'{1 - r:.0%}' for r in ratios)});"
            " `full` is the unmodified model.",
            f"NQ retrieval: the questions whose gold passage is among the first {self.config.passages} gold passages"
            " (the corpus); mode `corpus` = reduced passages, full queries; `both` = both reduced.",
            f"WikiText-2: {self.samples} test sentences. Speed: {self.config.speed_texts} passages at batch"
            f" {self.config.batch_size}, {max(1, self.config.speed_texts // 4)} at batch 1, {self.config.threads}"
            " torch threads, tokenisation included, best of 2 runs, each next to a full-model timing"
            " (speedup column).",
            "FLOPs: estimate from the real tokens each layer's attention and MLP process"
            " (reduction overhead excluded).",
        ]
        done = {(r["method"], float(r["ratio"])) for r in rows if r["task"] in self.tasks}
        missing = [f"{m} {r:g}" for m, r in self.cells() if (m, r) not in done]
        if missing:
            notes.append(f"**Not measured yet** (run the command again to resume): {', '.join(missing)}.")
        return notes

    def sections(self, rows: Sequence[dict[str, Any]]) -> list[str]:
        table, goal = _headline(rows)
        return ["", "## Summary", "", *goal, "", *table, "", "Tokens per layer:", "", *_layers(rows)]


def _headline(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[str]]:
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


def _layers(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Mean fraction of the input tokens in each layer's attention, per method and ratio (speed rows)."""
    fields = _layer_fields(rows)
    lines = ["| method | ratio | " + " | ".join(f"L{f[len('tokens_l') :]}" for f in fields) + " |"]
    lines.append("|---|---|" + "---|" * len(fields))
    for record in summarize([r for r in rows if r["task"] == "speed" and r["mode"] == "batch32"]):
        lines.append(
            f"| {record['method']} | {float(record['ratio']):g} | "
            + " | ".join(f"{record.get(f, float('nan')):.2f}" for f in fields)
            + " |"
        )
    return lines
