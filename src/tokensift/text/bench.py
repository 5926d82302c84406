"""``tokensift bench text``: prompt-compression methods x rates on the tasks of :mod:`tokensift.text.tasks`.

Each method scores a prompt once and compresses it to every rate (the time of a row is that scoring plus
its own selection: what one compression costs). A reader (the same small LM) then gives the
log-probability of the gold answer / reference solution after the compressed and the full prompt.
LLMLingua runs as a peer in its own environment on the same instances (``benchmarks/peers/llmlingua``);
its outputs are scored by the same reader and stored as rows with ``system=llmlingua``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from tokensift.bench import RowStore, write_report
from tokensift.errors import InputFileError, ParameterError, TokensiftError
from tokensift.text.budget import TokenCounter, count_parts
from tokensift.text.compress import Compression, Compressor
from tokensift.text.scoring import Scorer
from tokensift.text.tasks import (
    ADHERENCE_LENGTHS,
    Instance,
    adherence_instances,
    gsm8k_instance,
    nq_instances,
    qa_reader_prompt,
)

TASKS = ("nq_qa", "gsm8k_cot", "rate_adherence")
METHODS = ("random", "surprisal", "selective_context", "llmlingua", "longllmlingua", "attribution")
PEER_MODES = {"nq_qa": ["llmlingua", "longllmlingua"], "gsm8k_cot": ["llmlingua"], "rate_adherence": ["llmlingua"]}
PEER_DIR = Path(__file__).resolve().parents[3] / "benchmarks" / "peers" / "llmlingua"
QUALITY = {"nq_qa": "gold_retained", "gsm8k_cot": "logprob_delta", "rate_adherence": "abs_rate_error"}
COST = ["achieved_rate", "tokens_after", "compress_seconds", "logprob_delta", "within_2pct"]

CHUNK = 10
"""Instances run through every method and peer before the next ones."""

Progress = Callable[[str, int, int], None]


@dataclass
class BenchConfig:
    """What to run: tasks x methods x rates on one model, ``samples`` per cell, peers beside."""

    out_dir: Path
    model: str = "smollm2-135m"
    tasks: Sequence[str] = TASKS
    methods: Sequence[str] = METHODS
    rates: Sequence[float] = (0.5, 0.33)
    samples: int = 50
    distractors: int = 3
    max_length: int = 8000
    """Longest rate_adherence input, in tokens."""
    peers: Sequence[str] = ()
    data_dir: Path | None = None
    results: Path | None = None
    command: str = "tokensift bench text"
    notes: list[str] = field(default_factory=list)

    def check(self) -> None:
        for name, allowed, given in (("task", TASKS, self.tasks), ("method", METHODS, self.methods)):
            unknown = [g for g in given if g not in allowed]
            if unknown:
                raise ParameterError(f"unknown {name}(s) {', '.join(unknown)}; known: {', '.join(allowed)}")
        if any(not 0.0 < r <= 1.0 for r in self.rates):
            raise ParameterError(f"rates must be in (0, 1], got {list(self.rates)}")
        if self.samples < 1 or self.distractors < 0:
            raise ParameterError("samples must be >= 1 and distractors >= 0")
        if set(self.peers) - {"llmlingua"}:
            raise ParameterError(f"unknown peer(s) {sorted(set(self.peers) - {'llmlingua'})}; known: llmlingua")


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
    if task == "nq_qa":
        documents = compressed if isinstance(compressed, list) else [compressed]
        probe = instance.probes[0]
        return qa_reader_prompt(documents, probe["question"]), [("", " " + probe["answers"][0])]
    text = compressed if isinstance(compressed, str) else "\n\n".join(compressed)
    return text, [(p["lead"], p["target"]) for p in instance.probes]


def _sample_ids(instance: Instance) -> list[str]:
    return [p["id"] for p in instance.probes] if instance.task == "gsm8k_cot" else [instance.sample_id]


class Runner:
    """Runs a :class:`BenchConfig`, appending rows to a resumable :class:`RowStore`."""

    def __init__(self, config: BenchConfig, scorer: Scorer, progress: Progress | None = None) -> None:
        self.config = config
        self.scorer = scorer
        self.reader = Reader(scorer)
        self.counter = TokenCounter(scorer.tokenizer, scorer.name)
        self.store = RowStore(config.out_dir)
        self.progress = progress or (lambda label, done, total: None)
        self._full: dict[tuple[str, str], list[float]] = {}

    def key(self, task: str, method: str, ratio: float, sample_id: str, system: str = "tokensift") -> dict[str, Any]:
        return {
            "system": system,
            "target": "text",
            "model": self.config.model,
            "task": task,
            "mode": "-",
            "method": method,
            "ratio": ratio,
            "sample_id": sample_id,
        }

    def instances(self, task: str, data: Path) -> list[Instance]:
        if task == "nq_qa":
            return nq_instances(data, self.config.samples, self.config.distractors)
        if task == "gsm8k_cot":
            return [gsm8k_instance(data, self.config.samples)]
        lengths = [n for n in ADHERENCE_LENGTHS if n <= self.config.max_length]
        return adherence_instances(data, self.scorer.tokenizer, lengths)

    def full_logprobs(self, instance: Instance) -> list[float]:
        """The reader on the uncompressed prompt (stored once as ``method=full`` rows)."""
        cache_key = (instance.task, instance.sample_id)
        if cache_key not in self._full:
            context, probes = _context(instance.task, instance, instance.prompt)
            values = self.reader.logprobs(context, probes) if probes else []
            self._full[cache_key] = values
            for sample_id, value in zip(_sample_ids(instance), values, strict=True):
                key = self.key(instance.task, "full", 1.0, sample_id)
                self.store.append({**key, "logprob": value, "logprob_delta": 0.0, "achieved_rate": 1.0})
        return self._full[cache_key]

    def rows_for(self, instance: Instance, compressed: str | list[str], stats: dict[str, Any]) -> list[dict[str, Any]]:
        """Quality fields of one compression (one row per probe; adherence rows have no reader)."""
        rate_error = stats["achieved_rate"] - stats["ratio"]
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
            if instance.task == "nq_qa":
                text = compressed if isinstance(compressed, str) else "\n".join(compressed)
                row["gold_retained"] = any(a.lower() in text.lower() for a in instance.probes[0]["answers"])
            rows.append(row)
        return rows

    def run_method(self, method: str, instances: list[Instance]) -> None:
        compressor = Compressor(method, model=self.scorer)
        for done, instance in enumerate(instances, 1):
            todo = [
                r
                for r in self.config.rates
                if not all(self.store.has(**self.key(instance.task, method, r, s)) for s in _sample_ids(instance))
            ]
            if todo:
                prepared = compressor.prepare(instance.prompt, instance.question)
                for rate in todo:
                    self._one(compressor, prepared, instance, method, rate)
            self.progress(f"{instance.task} · {method}", done, len(instances))

    def _one(self, compressor: Compressor, prepared: Any, instance: Instance, method: str, rate: float) -> None:
        base = self.key(instance.task, method, rate, instance.sample_id)
        try:
            result: Compression = compressor.compress(prepared, rate=rate)
        except TokensiftError as exc:
            for sample_id in _sample_ids(instance):
                self.store.append({**base, "sample_id": sample_id, "error": str(exc)})
            return
        stats = {
            **base,
            "tokens_before": result.tokens_before,
            "tokens_after": result.tokens_after,
            "achieved_rate": result.rate,
            "compress_seconds": result.seconds["total"],
            "score_seconds": result.seconds["score"],
        }
        compressed = cast("str | list[str]", result.compressed)  # benchmark prompts are never chats
        for row in self.rows_for(instance, compressed, stats):
            self.store.append(row)

    def run_peer(self, task: str, instances: list[Instance], model_folder: Path) -> None:
        """LLMLingua in its own environment on the same instances, then the same reader on its outputs."""
        python = PEER_DIR / ".venv" / "bin" / "python"
        if not python.exists():
            raise InputFileError(f"the LLMLingua peer is not set up: run bash {PEER_DIR / 'setup.sh'}")
        modes = PEER_MODES[task]
        todo = [
            i
            for i in instances
            if not all(
                self.store.has(**self.key(task, m, r, s, system="llmlingua"))
                for m in modes
                for r in self.config.rates
                for s in _sample_ids(i)
            )
        ]
        if not todo:
            return
        inputs, outputs = (
            self.config.out_dir / f"peer_llmlingua_{task}_in.jsonl",
            self.config.out_dir / f"peer_llmlingua_{task}_out.jsonl",
        )
        with inputs.open("w", encoding="utf-8") as handle:
            for i in todo:
                item = {"id": i.sample_id, "task": task, "prompt": i.prompt, "question": i.question}
                handle.write(json.dumps({**item, "rates": list(self.config.rates), "modes": modes}) + "\n")
        self.progress(f"{task} · llmlingua peer (own venv)", 0, len(todo))
        subprocess.run(
            ["nice", "-n", "10", str(python), str(PEER_DIR / "run.py"), str(model_folder), str(inputs), str(outputs)],
            check=True,
        )
        by_id = {i.sample_id: i for i in todo}
        lines = outputs.read_text(encoding="utf-8").splitlines()
        for done, line in enumerate(lines, 1):
            out = json.loads(line)
            instance = by_id.get(out["id"])
            if instance is None:
                continue
            base = self.key(task, out["mode"], out["rate"], instance.sample_id, system="llmlingua")
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
            }
            for row in self.rows_for(instance, out["compressed"], stats):
                self.store.append(row)
            self.progress(f"{task} · llmlingua peer (scoring)", done, len(lines))


def run_bench(
    config: BenchConfig, scorer: Scorer, model_folder: Path, data: Path, progress: Progress | None = None
) -> Path:
    """Run everything not stored yet, then write the report (and ``config.results`` if given)."""
    config.check()
    runner = Runner(config, scorer, progress)
    for task in config.tasks:
        instances = runner.instances(task, data)
        for start in range(0, len(instances), CHUNK):  # chunks: an interrupted run has every method on the same samples
            chunk = instances[start : start + CHUNK]
            for method in config.methods:
                runner.run_method(method, chunk)
            if "llmlingua" in config.peers:
                runner.run_peer(task, chunk, model_folder)
    return report(config, runner.store.rows())


def speed_and_goals(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The issue's goals, measured: speed ratios vs LLMLingua and rate adherence, per task and rate."""
    from tokensift.bench import summarize

    cells = {(r["system"], r["task"], r["method"], float(r["ratio"])): r for r in summarize(rows)}
    lines = [
        "",
        "## Goals (same run)",
        "",
        "| task | rate | ours | LLMLingua mode | speed-up | gold retained / Δlog-p, ours vs peer "
        "| abs rate error, ours vs peer |",
        "|---|---|---|---|---|---|---|",
    ]
    pairs = [
        ("llmlingua", "llmlingua"),
        ("longllmlingua", "longllmlingua"),
        ("surprisal", "llmlingua"),
        ("selective_context", "llmlingua"),
    ]
    for (system, task, method, ratio), ours in sorted(cells.items()):
        if system != "tokensift":
            continue
        for mine, theirs in pairs:
            peer = cells.get(("llmlingua", task, theirs, ratio))
            if method != mine or peer is None or not ours.get("compress_seconds") or not peer.get("compress_seconds"):
                continue
            speed = peer["compress_seconds"] / ours["compress_seconds"]
            metric = "gold_retained" if task == "nq_qa" else "logprob_delta"
            quality = (
                f"{ours.get(metric, float('nan')):.3g} vs {peer.get(metric, float('nan')):.3g}"
                if task != "rate_adherence"
                else "–"
            )
            lines.append(
                f"| {task} | {ratio:g} | {mine} | {theirs} | {speed:.2f}x | {quality} | "
                f"{ours.get('abs_rate_error', float('nan')):.4f} vs {peer.get('abs_rate_error', float('nan')):.4f} |"
            )
    return lines


def _sample_counts(rows: Sequence[dict[str, Any]]) -> list[str]:
    """A note with the rows per cell of each task (so a reduced run says so at the top)."""
    from tokensift.bench import summarize

    notes = []
    for task in TASKS:
        counts = [r["n"] for r in summarize(rows) if r["task"] == task and r["method"] != "full"]
        if counts:
            notes.append(f"{task}: {min(counts)}–{max(counts)} rows per cell")
    failed: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("error"):
            failed.setdefault((row["system"], row["task"], row["method"]), []).append(row)
    for (system, task, method), bad in sorted(failed.items()):
        which = sorted({f"{r['sample_id']}@{float(r['ratio']):g}" for r in bad})
        notes.append(
            f"**failed** ({system} {method}, {task}): {len(bad)} rows not in the tables ({', '.join(which)}): "
            f"{bad[0]['error']}"
        )
    return notes


def report(config: BenchConfig, rows: Sequence[dict[str, Any]]) -> Path:
    """``report.md`` in the output folder; with ``config.results``, the same page plus goals and plots there."""
    notes = [
        f"model {config.model} scores, counts tokens (its tokenizer) and reads; "
        f"rates requested: {', '.join(f'{r:g}' for r in config.rates)}",
        f"nq_qa: NaturalQuestions-Open questions, gold passage among {config.distractors} distractors; "
        "gold_retained = a gold answer string survives; "
        "logprob_delta = log p(gold answer | compressed) - log p(gold answer | full)",
        "gsm8k_cot: prompt_hardest.txt compressed once per method and rate (question-agnostic), reader scored on "
        "the first GSM8K test questions' reference solutions (logprob_delta, nats, summed over the solution)",
        f"rate_adherence: Paul Graham essays cut to 50 ... {config.max_length:,} tokens; "
        "abs_rate_error = |achieved - requested|",
        "compress_seconds = scoring + selection for one compression (ours) / one compress_prompt call (LLMLingua); "
        "both on the same CPU with the same thread count (run-text.sh: one thread each), interleaved task by task",
        "LLMLingua 0.2.2 (peer, own venv) uses the same SmolLM2 folder and counts budgets with the same "
        "tokenizer (shim)",
        *_sample_counts(rows),
        *config.notes,
    ]
    target = config.out_dir if config.results is None else config.results.parent / config.results.stem
    page = write_report(
        target,
        rows,
        title="Prompt compression (tokensift bench text)",
        command=config.command,
        quality=QUALITY,
        cost=COST,
        notes=notes,
    )
    text = page.read_text(encoding="utf-8") + "\n".join(speed_and_goals(rows)) + "\n"
    page.write_text(text, encoding="utf-8")
    if config.results is not None:
        folder = target.name
        config.results.write_text(text.replace("](plots/", f"]({folder}/plots/"), encoding="utf-8")
        return config.results
    return page
