"""``tokensift bench scale``: rows/s of ``tokensift batch`` with 1 and 2 Ray actors, on the shared skeleton.

Each task writes one real input table (``embed``: NQ-Open gold passages; ``inspect``: WikiText-2 paragraphs)
and runs the same batch job over it once per *method*, which here is how the job runs:

* ``off``: one process, torch's default threads (what ``--ray off`` does);
* ``off-1``: one process, one thread (the reference the Ray outputs must equal bit for bit);
* ``actors-N``: ``N`` Ray actors of one CPU (and one torch thread) each, on a local cluster.

The headline is the *working* rate: rows over the time from the first shard's start to the last shard's end
(models already loaded); the wall rate (Ray start, model loads, merge included) is reported beside it. Each
row also says whether the output equals ``off-1``'s row for row and the peak RSS of any process.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from tokensift.bench.benchmark import Benchmark, WorkItem
from tokensift.bench.config import BenchConfig
from tokensift.errors import ParameterError

TARGET_SPEEDUP = 1.7
"""2 actors must reach this multiple of one actor's rows/s (issue 16)."""
EXECUTIONS = ("off", "off-1", "actors-1", "actors-2")


@dataclass
class ScaleBenchConfig(BenchConfig):
    embed_rows: int = 2000
    inspect_rows: int = 160
    shard_rows: int = 0
    """0: about 24 shards per task (enough for two actors to stay busy to the end)."""


class ScaleBenchmark(Benchmark):
    """Batch jobs × ways of running them (see the module doc)."""

    target: ClassVar[str] = "scale"
    heading: ClassVar[str] = "tokensift batch: rows/s with Ray actors"
    config_class = ScaleBenchConfig
    quality: ClassVar[dict[str, str]] = {"embed": "rows_per_second", "inspect": "rows_per_second"}
    cost: ClassVar[tuple[str, ...]] = ("wall_rows_per_second", "peak_rss_mb")
    needs: ClassVar[dict[str, tuple[str, ...]]] = {
        "embed": ("lost_in_the_middle/nq-open-oracle.jsonl.gz",),
        "inspect": ("wikitext2/wiki.test.raw",),
    }
    default_model = "smollm2-135m"
    default_tasks = ("embed", "inspect")
    default_ratios = (0.0,)
    default_samples = 1
    config: ScaleBenchConfig

    def registered(self) -> list[str]:
        return list(EXECUTIONS)

    def check(self) -> None:
        unknown = [t for t in self.tasks if t not in self.quality]
        if unknown:
            raise ParameterError(f"unknown scale task(s) {', '.join(unknown)}; tasks: embed, inspect", option="tasks")
        for method in self.methods:
            if method not in ("off", "off-1") and not (method.startswith("actors-") and method[7:].isdigit()):
                raise ParameterError(
                    f"unknown way to run {method!r}; use off, off-1 or actors-N (N Ray actors)", option="methods"
                )

    def load(self) -> None:
        """Nothing: each run's workers load the model themselves."""

    def setup(self) -> None:
        from tokensift.bench.data import nq_open, wikitext

        assert self.data is not None
        self.inputs: dict[str, Path] = {}
        folder = self.config.out / "inputs"
        folder.mkdir(parents=True, exist_ok=True)
        if "embed" in self.tasks:
            passages = [item["ctxs"][0]["text"] for item in nq_open(self.data)][: self.config.embed_rows]
            self.inputs["embed"] = _write(folder / "embed.jsonl", passages)
        if "inspect" in self.tasks:
            paragraphs = [p.strip() for p in wikitext(self.data).split("\n") if len(p.split()) >= 40]
            paragraphs = [" ".join(p.split()[:120]) for p in paragraphs][: self.config.inspect_rows]
            self.inputs["inspect"] = _write(folder / "inspect.jsonl", paragraphs)

    def plan(self) -> list[WorkItem]:
        ordered = sorted(self.methods, key=lambda m: m != "off-1")  # the reference first
        return [WorkItem(f"{task} · {method}", (task, method)) for task in self.tasks for method in ordered]

    def job(self, task: str) -> Any:
        from tokensift.batch.jobs import EmbedJob, InspectJob

        cache = str(self.config.cache_dir) if self.config.cache_dir else None
        if task == "embed":
            return EmbedJob(cache_dir=cache, truncate=True)
        return InspectJob(model=self.model_name, cache_dir=cache)

    def run_item(self, item: WorkItem) -> None:
        import torch

        from tokensift.batch.runner import run_batch

        task, method = item.args
        key = self.key(task, "batch", method, 0.0, "all")
        if self.has(**key):
            return
        source = self.inputs[task]
        rows = sum(1 for _ in source.open())
        shard_rows = self.config.shard_rows or max(1, rows // 24)
        output = self.config.out / "outputs" / f"{task}-{method}.parquet"
        threads = torch.get_num_threads()
        try:
            report = run_batch(
                self.job(task),
                source,
                output,
                ray="off" if method.startswith("off") else "auto",
                actors=int(method[7:]) if method.startswith("actors-") else None,
                cpus_per_actor=1 if method != "off" else None,
                shard_rows=shard_rows,
                restart=True,
            )
        finally:
            torch.set_num_threads(threads)
        reference = self.config.out / "outputs" / f"{task}-off-1.parquet"
        self.store.append(
            {
                **key,
                "rows": report.rows,
                "errors": report.errors,
                "shards": report.shards,
                "actors": report.actors if report.mode == "ray" else 0,
                "workers": report.workers,
                "rows_per_second": report.rows_per_second,
                "wall_rows_per_second": report.rows / report.seconds,
                "work_seconds": report.work_seconds,
                "wall_seconds": report.seconds,
                "peak_rss_mb": report.worker_rss_mb,
                "equal_to_off_1": _same(output, reference) if reference.exists() else None,
            }
        )

    def notes(self, rows: Sequence[dict[str, Any]]) -> list[str]:
        return [
            "rows/s: rows over the time from the first shard's start to the last shard's end (models loaded); "
            "wall rows/s include Ray's start, model loads and the merge",
            "off = one process, torch's threads; off-1 = one process, one thread; actors-N = N Ray actors × 1 CPU",
            f"embed runs all-MiniLM-L6-v2 (batch embed's default), inspect {self.model_name}",
            "peak RSS: the largest worker process (the benchmark's own process for off and off-1, whose high-water "
            "mark carries over from earlier runs in it); = off-1: the output table equals off-1's, value for value",
        ]

    def sections(self, rows: Sequence[dict[str, Any]]) -> list[str]:
        lines = [
            "",
            "## Scaling",
            "",
            "| task | run | rows | rows/s | × actors-1 | wall rows/s | peak RSS MiB | = off-1 |",
        ]
        lines.append("|---|---|---:|---:|---:|---:|---:|---|")
        verdicts = []
        for task in self.quality:
            found = {r["method"]: r for r in rows if r["task"] == task}
            one = found.get("actors-1")
            for method in sorted(found, key=lambda m: (not m.startswith("off"), m)):
                r = found[method]
                ratio = r["rows_per_second"] / one["rows_per_second"] if one else float("nan")
                lines.append(
                    f"| {task} | {method} | {r['rows']} | {r['rows_per_second']:.2f} | {ratio:.2f} | "
                    f"{r['wall_rows_per_second']:.2f} | {r['peak_rss_mb']:.0f} | {_yes(r.get('equal_to_off_1'))} |"
                )
            two = found.get("actors-2")
            if one and two:
                speedup = two["rows_per_second"] / one["rows_per_second"]
                met = "met" if speedup >= TARGET_SPEEDUP else "**not met**"
                verdicts.append(f"- {task}: 2 actors = {speedup:.2f}× one actor (target ≥ {TARGET_SPEEDUP}×): {met}")
        return [*lines, "", *verdicts]


def _write(path: Path, texts: Sequence[str]) -> Path:
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    return path


def _same(output: Path, reference: Path) -> bool:
    import pyarrow.parquet as pq

    return bool(pq.read_table(output).equals(pq.read_table(reference)))


def _yes(value: Any) -> str:
    return "—" if value is None else ("yes" if value else "**no**")
