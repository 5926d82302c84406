"""The benchmark skeleton: what every ``tokensift bench TARGET`` does, so a target adds only tasks and metrics.

A :class:`Benchmark` subclass names its target, its tasks (each with its headline metric), its cost
fields and its defaults, plans work items and runs one item at a time, appending rows to a
:class:`~tokensift.bench.store.RowStore`. The skeleton checks the config against the registry, finds the
data (one policy, :mod:`tokensift.bench.data`), loads the model, drives the progress callback, keys the
rows the same way for every target, resumes, and writes one report (summary CSV, plots, Markdown).
"""

from __future__ import annotations

import dataclasses
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from tokensift.bench.config import BenchConfig
from tokensift.bench.data import data_file, require_data_dir
from tokensift.bench.report import summarize, write_report
from tokensift.bench.store import RowStore
from tokensift.errors import ParameterError
from tokensift.inputs import whole_number
from tokensift.select import Budget

Progress = Callable[[str, int, int], None]
"""``progress(label, done, total)``, called before each work item and once at the end."""

FULL = "full"
"""Method name of the uncompressed baseline's rows (ratio 0) in every target."""


@dataclass
class WorkItem:
    """One resumable unit of work: a label for the progress bar and what it needs."""

    label: str
    args: tuple[Any, ...] = ()


class Benchmark(ABC):
    """Tasks x methods x ratios on one model. Subclasses fill the class fields and :meth:`plan`/:meth:`run_item`."""

    target: ClassVar[str]
    heading: ClassVar[str]
    """The report's title (the model's name is added)."""
    config_class: ClassVar[type[BenchConfig]] = BenchConfig
    quality: ClassVar[dict[str, str]]
    """Every task the target knows, with its headline metric (a numeric row field)."""
    cost: ClassVar[tuple[str, ...]] = ()
    known_peers: ClassVar[tuple[str, ...]] = ()
    needs: ClassVar[dict[str, tuple[str, ...]]] = {}
    """The data files (paths in the data folder) each task reads: checked before the model loads."""
    uses_data_dir: ClassVar[bool] = True
    """False for a target whose data ships in wheels (vision: easy-VQA), so no data folder is required."""
    default_model: ClassVar[str]
    default_tasks: ClassVar[tuple[str, ...]]
    default_ratios: ClassVar[tuple[float, ...]]
    default_samples: ClassVar[int]

    def __init__(self, config: BenchConfig) -> None:
        self.config = config
        self.model_name: str = config.model or self.default_model
        self.tasks: tuple[str, ...] = tuple(self.default_tasks if config.tasks is None else config.tasks)
        self.methods: tuple[str, ...] = tuple(self.registered() if config.methods is None else config.methods)
        self.ratios: tuple[float, ...] = tuple(self.default_ratios if config.ratios is None else config.ratios)
        self.samples: int = self.default_samples if config.samples is None else config.samples
        self.check()
        self.data: Path | None = (
            None if config.report_only or not self.uses_data_dir else require_data_dir(config.data_dir)
        )
        if self.data is not None:
            for task in self.tasks:
                for path in self.needs.get(task, ()):
                    data_file(self.data, *path.split("/"))
        self.loaded: Any = None
        self.store = RowStore(config.out)

    # -- what a target adds --------------------------------------------------------------------------------
    @abstractmethod
    def setup(self) -> None:
        """Prepare what the items need (after the model and the data are loaded)."""

    @abstractmethod
    def plan(self) -> list[WorkItem]:
        """The work items, in run order (finished ones may be included: :meth:`run_item` skips stored rows)."""

    @abstractmethod
    def run_item(self, item: WorkItem) -> None:
        """Compute one item and append its rows."""

    def notes(self, rows: Sequence[dict[str, Any]]) -> list[str]:
        """Target-specific notes at the top of the report."""
        return []

    def sections(self, rows: Sequence[dict[str, Any]]) -> list[str]:
        """Extra Markdown lines appended to the report (goals, headline tables)."""
        return []

    # -- the skeleton ----------------------------------------------------------------------------------------
    def registered(self) -> list[str]:
        """Every registered method of the target (the default method list)."""
        from tokensift.methods import names

        return names(self.target)

    def check(self) -> None:
        """Typed errors for a config that cannot run, before anything is loaded."""
        from tokensift.methods import parse

        unknown = [t for t in self.tasks if t not in self.quality]
        if unknown:
            raise ParameterError(
                f"unknown {self.target} task(s) {', '.join(unknown)}; tasks: {', '.join(self.quality)}", option="tasks"
            )
        for method in self.methods:
            parse(self.target, method)
        for ratio in self.ratios:
            Budget(ratio=ratio)
        whole_number(self.samples, "samples", low=0)
        peers = [p for p in self.config.peers if p not in self.known_peers]
        if peers:
            known = ", ".join(self.known_peers) or "none run from this command"
            raise ParameterError(f"unknown {self.target} peer(s) {', '.join(peers)}; peers: {known}", option="peers")

    def key(self, task: str, mode: str, method: str, ratio: float, sample_id: str, system: str = "tokensift") -> dict:
        """The fields that identify a row (:data:`tokensift.bench.store.KEY_FIELDS`)."""
        return {
            "system": system,
            "target": self.target,
            "model": self.model_name,
            "task": task,
            "mode": mode,
            "method": method,
            "ratio": ratio,
            "sample_id": sample_id,
        }

    def has(self, **key: Any) -> bool:
        return self.store.has(**key)

    def load(self) -> None:
        """Load the model (once)."""
        from tokensift.models import load_model

        if self.loaded is None:
            self.loaded = load_model(self.model_name, cache_dir=self.config.cache_dir)

    def run(self, progress: Progress | None = None) -> Path:
        """Run (or resume) everything not stored yet, unless ``report_only``; then write the report."""
        report = progress or (lambda label, done, total: None)
        if not self.config.report_only:
            self.load()
            self.setup()
            items = self.plan()
            for done, item in enumerate(items):
                report(item.label, done, len(items))
                self.run_item(item)
            report("done", len(items), len(items))
        return self.report()

    def command(self) -> str:
        """The command line that reproduces this run (shown at the top of the report)."""
        if self.config.command:
            return self.config.command
        parts = [f"tokensift bench {self.target} --out {self.config.out}", f"--model {self.model_name}"]
        parts.append(f"--tasks {','.join(self.tasks)} --methods {','.join(self.methods)}")
        parts.append(f"--ratios {','.join(f'{r:g}' for r in self.ratios)} --samples {self.samples}")
        parts.append(f"--seed {self.config.seed}")
        for f in dataclasses.fields(self.config):
            if f.name not in {g.name for g in dataclasses.fields(BenchConfig)}:
                parts.append(f"--{f.name.replace('_', '-')} {_flag(getattr(self.config, f.name))}")
        if self.config.peers:
            parts.append(f"--peers {','.join(self.config.peers)}")
        return " ".join(parts)

    def report(self) -> Path:
        """``summary.csv``, ``plots/`` and ``report.md`` in the output folder (next to ``results`` with
        ``--results``: the page there, the plots in the folder named after it)."""
        rows = self.store.rows()
        results = self.config.results
        folder = self.config.out if results is None else results.parent / results.stem
        present = [t for t in self.quality if any(r["task"] == t for r in rows)]
        page = write_report(
            folder,
            rows,
            title=f"{self.heading} · {self.model_name}",
            command=self.command(),
            quality={t: self.quality[t] for t in present},
            cost=self.cost,
            notes=[*self.notes(rows), *sample_counts(rows, present)],
        )
        text = page.read_text(encoding="utf-8") + "".join(f"{line}\n" for line in self.sections(rows))
        page.write_text(text, encoding="utf-8")
        if results is None:
            return page
        link = os.path.relpath(folder, results.parent)
        results.write_text(text.replace("](plots/", f"]({link}/plots/"), encoding="utf-8")
        return results


def _flag(value: Any) -> str:
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return str(value)


def sample_counts(rows: Sequence[dict[str, Any]], tasks: Sequence[str]) -> list[str]:
    """Notes with the rows per cell of each task (so a reduced run says so) and the rows that failed."""
    notes = []
    summary = summarize(rows)
    for task in tasks:
        counts = [r["n"] for r in summary if r["task"] == task and r["method"] != FULL]
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
