"""``tokensift bench text``: the prompt-compression target's tasks and metrics on the shared benchmark skeleton.

Each method scores a prompt once and compresses it to every ratio (the time of a row is that scoring plus
its own selection: what one compression costs). A reader (the same small LM) then gives the
log-probability of the gold answer / reference solution after the compressed and the full prompt.
LLMLingua runs as a peer in its own environment on the same instances (``benchmarks/peers/llmlingua``);
its outputs are scored by the same reader and stored as rows with ``system=llmlingua``. Rows keep
LLMLingua's names ``achieved_rate`` / ``rate_error`` beside ``kept_fraction`` for comparison with its results.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, cast

import torch

from tokensift.bench import FULL, BenchConfig, Benchmark, WorkItem
from tokensift.errors import InputFileError, ParameterError, TokensiftError
from tokensift.select import Budget
from tokensift.text.api import Compression, Compressor, resolve_scorer
from tokensift.text.budget import TokenCounter, count_parts
from tokensift.text.scoring import Scorer
from tokensift.text.tasks import (
    ADHERENCE_LENGTHS,
    Instance,
    adherence_instances,
    gsm8k_instance,
    nq_instances,
    qa_reader_prompt,
    wiki_summary_instances,
)

PEER_MODES = {
    "nq_qa": ["llmlingua", "longllmlingua"],
    "nq_agnostic": ["llmlingua"],
    "nq_single": ["longllmlingua"],
    "gsm8k_cot": ["llmlingua"],
    "rate_adherence": ["llmlingua"],
    "wiki_summary": ["llmlingua"],
}
"""LLMLingua's own modes run per task (named as LLMLingua names them)."""
PEER_DIR = Path(__file__).resolve().parents[3] / "benchmarks" / "peers" / "llmlingua"
QUALITY = {
    "nq_qa": "gold_retained",
    "nq_agnostic": "gold_retained",
    "nq_single": "gold_retained",
    "gsm8k_cot": "logprob_delta",
    "rate_adherence": "abs_rate_error",
    "wiki_summary": "logprob_delta",
}
NQ_TASKS = ("nq_qa", "nq_agnostic", "nq_single")
COST = ("achieved_rate", "tokens_after", "compress_seconds", "logprob_delta", "within_2pct", "cut_units")

CHUNK = 10
"""Instances run through every method and peer before the next ones."""


@dataclass
class TextBenchConfig(BenchConfig):
    """``tokensift bench text``: the shared fields plus the NQ distractors and the longest adherence input."""

    distractors: int = 3
    max_length: int = 8000
    """Longest rate_adherence input, in tokens."""


class Reader:
    """Log-probability of a continuation after a context, with the context's KV cache reused per probe."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer

    @torch.no_grad()
    def logprobs(self, context: str, probes: Sequence[tuple[str, str]]) -> list[float]:
        """``sum log p(target | context + lead)`` for each ``(lead, target)``."""
        from transformers import DynamicCache

        model, device = self.scorer.model, self.scorer.device
        head = [] if self.scorer.prefix_id is None else [self.scorer.prefix_id]
        ids = torch.tensor(head + self.scorer.encode(context)[0].tolist(), dtype=torch.long)
        cache = DynamicCache()
        out = model(ids[None].to(device), past_key_values=cache, use_cache=True, logits_to_keep=1)
        last = out.logits[0, -1].float().cpu()
        length = cache.get_seq_length()
        found = []
        for lead, target in probes:
            lead_ids, target_ids = self.scorer.encode(lead)[0], self.scorer.encode(target)[0]
            both = torch.cat([lead_ids, target_ids])
            logits = model(both[None].to(device), past_key_values=cache, use_cache=True).logits[0].float().cpu()
            logits = torch.cat([last[None], logits[:-1]])[len(lead_ids) :]
            logp = torch.log_softmax(logits.double(), -1).gather(-1, target_ids[:, None])
            found.append(float(logp.sum()))
            cache.crop(length - cache.get_seq_length())  # negative: drop the probe tokens again
        return found


def _context(task: str, instance: Instance, compressed: str | list[str]) -> tuple[str, list[tuple[str, str]]]:
    """The reader's context and ``(lead, target)`` probes for a (compressed) prompt."""
    if task in NQ_TASKS:
        documents = compressed if isinstance(compressed, list) else [compressed]
        probe = instance.probes[0]
        return qa_reader_prompt(documents, probe["question"]), [("", " " + probe["answers"][0])]
    text = compressed if isinstance(compressed, str) else "\n\n".join(compressed)
    return text, [(p["lead"], p["target"]) for p in instance.probes]


def _sample_ids(instance: Instance) -> list[str]:
    return [p["id"] for p in instance.probes] if instance.task == "gsm8k_cot" else [instance.sample_id]


class TextBenchmark(Benchmark):
    """NQ QA retention, GSM8K chain-of-thought fidelity and rate adherence, with LLMLingua beside."""

    target = "text"
    heading = "Prompt compression (tokensift bench text)"
    config_class = TextBenchConfig
    quality = QUALITY
    cost = COST
    known_peers = ("llmlingua",)
    needs: ClassVar[dict[str, tuple[str, ...]]] = {
        "nq_qa": ("lost_in_the_middle/nq-open-oracle.jsonl.gz",),
        "nq_agnostic": ("lost_in_the_middle/nq-open-oracle.jsonl.gz",),
        "nq_single": ("lost_in_the_middle/nq-open-oracle.jsonl.gz",),
        "gsm8k_cot": ("gsm8k/prompt_hardest.txt", "gsm8k/test.jsonl"),
        "rate_adherence": ("pg_essays",),
        "wiki_summary": ("wikitext2/wiki.test.raw",),
    }
    default_model = "smollm2-135m"
    default_tasks = ("nq_qa", "nq_agnostic", "gsm8k_cot", "rate_adherence")
    default_ratios = (0.5, 0.67)
    default_samples = 50
    config: TextBenchConfig

    def check(self) -> None:
        super().check()
        if isinstance(self.config.distractors, bool) or self.config.distractors < 0:
            raise ParameterError(f"distractors must be >= 0, got {self.config.distractors}", option="distractors")
        if self.config.max_length < ADHERENCE_LENGTHS[0]:
            raise ParameterError(f"max_length must be at least {ADHERENCE_LENGTHS[0]}", option="max_length")
        if 0.0 in self.ratios:
            raise ParameterError("ratio 0 keeps the whole prompt: nothing to measure (the `full` rows are it)")

    def setup(self) -> None:
        self.scorer: Scorer = resolve_scorer(self.loaded)
        self.reader = Reader(self.scorer)
        self.counter = TokenCounter(self.scorer.tokenizer, self.scorer.name)
        self._full: dict[tuple[str, str], list[float]] = {}
        self._instances = {task: self.instances(task) for task in self.tasks}

    def plan(self) -> list[WorkItem]:
        """Per task, chunks of instances: an interrupted run has every method (and peer) on the same samples."""
        return [
            WorkItem(f"{task} {start + 1}–{min(start + CHUNK, len(found))}/{len(found)}", (task, start))
            for task, found in self._instances.items()
            for start in range(0, len(found), CHUNK)
        ]

    def run_item(self, item: WorkItem) -> None:
        task, start = item.args
        chunk = self._instances[task][start : start + CHUNK]
        for method in self.methods:
            self.run_method(method, chunk)
        if "llmlingua" in self.config.peers:
            self.run_peer(task, chunk)

    def instances(self, task: str) -> list[Instance]:
        assert self.data is not None
        if task in NQ_TASKS:
            found = nq_instances(self.data, self.samples, self.config.distractors)
            if task == "nq_agnostic":  # the same contexts; no method is told the question
                return [replace(i, task=task, question=None) for i in found]
            if task == "nq_single":  # the documents as one text, the way a file is given to `compress`
                return [replace(i, task=task, prompt="\n\n".join(i.prompt)) for i in found]
            return found
        if task == "gsm8k_cot":
            return [gsm8k_instance(self.data, self.samples)]
        if task == "wiki_summary":
            return wiki_summary_instances(self.data, self.samples, self.scorer.tokenizer)
        lengths = [n for n in ADHERENCE_LENGTHS if n <= self.config.max_length]
        return adherence_instances(self.data, self.scorer.tokenizer, lengths)

    def full_logprobs(self, instance: Instance) -> list[float]:
        """The reader on the uncompressed prompt (stored once as ``method=full`` rows)."""
        cache_key = (instance.task, instance.sample_id)
        if cache_key not in self._full:
            context, probes = _context(instance.task, instance, instance.prompt)
            values = self.reader.logprobs(context, probes) if probes else []
            self._full[cache_key] = values
            for sample_id, value in zip(_sample_ids(instance), values, strict=True):
                key = self.key(instance.task, "-", FULL, 0.0, sample_id)
                self.store.append({**key, "logprob": value, "logprob_delta": 0.0, "achieved_rate": 1.0})
        return self._full[cache_key]

    def rows_for(self, instance: Instance, compressed: str | list[str], stats: dict[str, Any]) -> list[dict[str, Any]]:
        """Quality fields of one compression (one row per probe; adherence rows have no reader)."""
        rate_error = stats["achieved_rate"] - _kept(stats["ratio"])
        common = {**stats, "rate_error": rate_error, "abs_rate_error": abs(rate_error)}
        common["within_2pct"] = abs(rate_error) <= 0.02
        common["kept_fraction"] = stats["achieved_rate"]
        if instance.task == "rate_adherence":
            return [common]
        context, probes = _context(instance.task, instance, compressed)
        values = self.reader.logprobs(context, probes)
        full = self.full_logprobs(instance)
        rows = []
        for sample_id, value, reference in zip(_sample_ids(instance), values, full, strict=True):
            row = {**common, "sample_id": sample_id, "logprob": value, "logprob_delta": value - reference}
            if instance.task in NQ_TASKS:
                text = compressed if isinstance(compressed, str) else "\n".join(compressed)
                row["gold_retained"] = any(a.lower() in text.lower() for a in instance.probes[0]["answers"])
            rows.append(row)
        return rows

    def run_method(self, method: str, instances: list[Instance]) -> None:
        compressor = Compressor(method, model=self.scorer)
        for instance in instances:
            todo = [
                r
                for r in self.ratios
                if not all(self.has(**self.key(instance.task, "-", method, r, s)) for s in _sample_ids(instance))
            ]
            if todo:
                prepared = compressor.prepare(instance.prompt, instance.question)
                for ratio in todo:
                    self._one(compressor, prepared, instance, method, ratio)

    def _one(self, compressor: Compressor, prepared: Any, instance: Instance, method: str, ratio: float) -> None:
        base = self.key(instance.task, "-", method, ratio, instance.sample_id)
        try:
            result: Compression = compressor.compress(prepared, ratio=ratio)
        except TokensiftError as exc:
            for sample_id in _sample_ids(instance):
                self.store.append({**base, "sample_id": sample_id, "error": str(exc)})
            return
        stats = {
            **base,
            "tokens_before": result.tokens_before,
            "tokens_after": result.tokens_after,
            "achieved_rate": result.kept_fraction,
            "compress_seconds": result.seconds["total"],
            "score_seconds": result.seconds["score"],
            "cut_units": sum(len({result.units[i].kept for i in bond}) > 1 for bond in prepared.job.segmented.bonds),
        }
        compressed = cast("str | list[str]", result.compressed)  # benchmark prompts are never chats
        for row in self.rows_for(instance, compressed, stats):
            self.store.append(row)

    def run_peer(self, task: str, instances: list[Instance]) -> None:
        """LLMLingua in its own environment on the same instances, then the same reader on its outputs."""
        python = PEER_DIR / ".venv" / "bin" / "python"
        if not python.exists():
            raise InputFileError(f"the LLMLingua peer is not set up: run bash {PEER_DIR / 'setup.sh'}")
        modes = PEER_MODES[task]
        todo = [
            i
            for i in instances
            if not all(
                self.has(**self.key(task, "-", m, r, s, system="llmlingua"))
                for m in modes
                for r in self.ratios
                for s in _sample_ids(i)
            )
        ]
        if not todo:
            return
        by_kept = {_kept(r): r for r in self.ratios}  # LLMLingua's rate is the fraction kept
        inputs, outputs = (
            self.config.out / f"peer_llmlingua_{task}_in.jsonl",
            self.config.out / f"peer_llmlingua_{task}_out.jsonl",
        )
        with inputs.open("w", encoding="utf-8") as handle:
            for i in todo:
                item = {"id": i.sample_id, "task": task, "prompt": i.prompt, "question": i.question}
                handle.write(json.dumps({**item, "rates": list(by_kept), "modes": modes}) + "\n")
        command = [str(python), str(PEER_DIR / "run.py"), str(self.loaded.path), str(inputs), str(outputs)]
        subprocess.run(["nice", "-n", "10", *command], check=True)
        by_id = {i.sample_id: i for i in todo}
        lines = outputs.read_text(encoding="utf-8").splitlines()
        for line in lines:
            out = json.loads(line)
            instance = by_id.get(out["id"])
            if instance is None:
                continue
            if out["rate"] not in by_kept:
                continue
            base = self.key(task, "-", out["mode"], by_kept[out["rate"]], instance.sample_id, system="llmlingua")
            if all(self.store.has(**{**base, "sample_id": s}) for s in _sample_ids(instance)):
                continue
            if out["error"]:
                for sample_id in _sample_ids(instance):
                    self.store.append({**base, "sample_id": sample_id, "error": out["error"]})
                continue
            before = count_parts(
                self.counter, instance.prompt if isinstance(instance.prompt, list) else [instance.prompt]
            )
            after = self.counter.count(out["compressed"])
            stats = {
                **base,
                "tokens_before": before,
                "tokens_after": after,
                "achieved_rate": after / before,
                "compress_seconds": out["seconds"],
                "cut_units": cut_in_text(instance.prompt, out["compressed"]),
            }
            for row in self.rows_for(instance, out["compressed"], stats):
                self.store.append(row)

    def notes(self, rows: Sequence[dict[str, Any]]) -> list[str]:
        kept = ", ".join(f"{r:g} (keep {_kept(r):g})" for r in self.ratios)
        return [
            f"model {self.model_name} scores, counts tokens (its tokenizer) and reads; "
            f"ratios (fraction removed): {kept}",
            f"nq_qa: NaturalQuestions-Open questions, gold passage among {self.config.distractors} distractors; "
            "gold_retained = a gold answer string survives; nq_agnostic: the same contexts, no method is given the "
            "question; nq_single: the same documents as one text (blank lines between), question given; "
            "logprob_delta = log p(gold answer | compressed) - log p(gold answer | full)",
            "wiki_summary (when run): a WikiText-2 article's body (whole paragraphs, <= 600 tokens) compressed, "
            "the reader scored on the article's lead paragraph after it (logprob_delta, nats, summed over the lead)",
            "gsm8k_cot: prompt_hardest.txt compressed once per method and ratio (question-agnostic), reader scored "
            "on the first GSM8K test questions' reference solutions (logprob_delta, nats, summed over the solution)",
            f"rate_adherence: Paul Graham essays cut to 50 ... {self.config.max_length:,} tokens; "
            "abs_rate_error = |achieved - requested kept fraction|",
            "compress_seconds = scoring + selection for one compression (ours) / one compress_prompt call "
            "(LLMLingua); both on the same CPU with the same thread count (run-text.sh: one thread each), "
            "interleaved task by task",
            "LLMLingua 0.2.2 (peer, own venv) uses the same SmolLM2 folder and counts budgets with the same "
            "tokenizer (shim); its `rate` is the kept fraction",
        ]

    def sections(self, rows: Sequence[dict[str, Any]]) -> list[str]:
        return speed_and_goals(rows)


def cut_in_text(prompt: str | list[str], compressed: str | list[str]) -> int:
    """Bonds (dates, numbers with their scale, names, quotations) of ``prompt`` that ``compressed`` keeps only in
    part: some of the bond's words stand in the output as words, but not the whole bond (a text search, for
    outputs whose kept units are not known, as LLMLingua's)."""
    from tokensift.text.units import STOPWORDS, Protect, segment

    def core(word: str) -> str:
        return word.strip("\"'()[],;:.!?").lower()

    seg = segment(prompt if isinstance(prompt, list) else [prompt], Protect())
    compressed = compressed if isinstance(compressed, str) else "\n".join(compressed)
    found = {core(w) for w in re.findall(r"\S+", compressed)}
    flat = " ".join(compressed.split())
    cut = 0
    for bond in seg.bonds:
        words = [seg.units[i].text.strip() for i in bond]
        telling = [core(w) for w in words if core(w) and core(w) not in STOPWORDS]
        if " ".join(words).rstrip(",.;:") not in flat and any(w in found for w in telling):
            cut += 1
    return cut


def _kept(ratio: float) -> float:
    kept = Budget(ratio=ratio).kept_fraction
    assert kept is not None
    return kept


def speed_and_goals(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The issue's goals, measured: speed ratios vs LLMLingua and rate adherence, per task and rate."""
    from tokensift.bench import summarize

    cells = {(r["system"], r["task"], r["method"], float(r["ratio"])): r for r in summarize(rows)}
    lines = [
        "",
        "## Goals (same run)",
        "",
        "| task | ratio | ours | LLMLingua mode | speed-up | gold retained / Δlog-p, ours vs peer "
        "| abs rate error, ours vs peer |",
        "|---|---|---|---|---|---|---|",
    ]
    for (system, task, method, ratio), ours in sorted(cells.items()):
        if system != "tokensift" or task not in PEER_MODES:
            continue
        theirs = method if method in PEER_MODES[task] else PEER_MODES[task][0]
        peer = cells.get(("llmlingua", task, theirs, ratio))
        if peer is None or not ours.get("compress_seconds") or not peer.get("compress_seconds"):
            continue
        speed = peer["compress_seconds"] / ours["compress_seconds"]
        metric = "gold_retained" if task in NQ_TASKS else "logprob_delta"
        quality = "–"
        if task != "rate_adherence":
            quality = f"{ours.get(metric, float('nan')):.3g} vs {peer.get(metric, float('nan')):.3g}"
        lines.append(
            f"| {task} | {ratio:g} | {method} | {theirs} | {speed:.2f}x | {quality} | "
            f"{ours.get('abs_rate_error', float('nan')):.4f} vs {peer.get('abs_rate_error', float('nan')):.4f} |"
        )
    return lines
