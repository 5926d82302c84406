"""Run a batch job over a table: shards, workers (Ray Data actors or this process), parts, one output.

The input is cut into shards (:mod:`tokensift.batch.tables`). Each pending shard is one task: a worker reads its
rows, runs the job (:mod:`tokensift.batch.jobs`) and writes the shard's part file atomically. With Ray the shards
are a Ray Data dataset mapped by an actor pool (``ActorPoolStrategy``): each actor loads the model once and
takes shard after shard; Ray restarts a killed actor and retries its shard, and since a part is renamed into
place only when whole, a retried shard is written once. ``--ray off`` runs the same worker in this process. A
re-run skips the shards whose parts exist (the job's options and input must be the same: ``job.json`` says what
they were). When every shard is written, each part is checked to hold exactly its shard's rows, and the parts
are concatenated into the output in input order.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokensift.batch.jobs import Job, check_job
from tokensift.batch.tables import (
    ERROR,
    Shard,
    input_columns,
    merge_parts,
    part_path,
    part_rows,
    plan_shards,
    read_shard,
    table_format,
    unusable,
    write_part,
)
from tokensift.errors import InputFileError, ParameterError, TokensiftError

Progress = Callable[[int, int], None]
"""``progress(rows_done, rows_total)`` after each shard."""
MANIFEST = "job.json"


@dataclass
class BatchReport:
    """What a batch job did: rows in and out, rows with an error, shards run and skipped, time and memory."""

    command: str
    input: str
    output: str
    mode: str
    """``ray`` or ``off``."""
    actors: int
    rows: int
    errors: int
    shards: int
    shards_skipped: int
    seconds: float
    """Wall time of the whole job (Ray start, model loads, shards, merge)."""
    work_seconds: float
    """From the first shard's start to the last shard's end (models already loaded): the steady rate's clock."""
    rows_run: int
    peak_rss_mb: float
    """Largest resident set of this process and of any worker (MiB)."""
    worker_rss_mb: float
    """Largest resident set of any worker process that wrote parts (MiB; this process with ``--ray off``)."""
    workers: int
    """Distinct worker processes that wrote parts."""
    text_columns: list[str] = field(default_factory=list)
    """Columns written as JSON text because their type differs between rows or shards."""
    ray_address: str | None = None

    @property
    def rows_per_second(self) -> float:
        return self.rows_run / self.work_seconds if self.work_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "rows_per_second": round(self.rows_per_second, 3)}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def combine(row: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """The output row: every input column, then the results; an input column with a result's name is kept as
    ``input.<name>`` (never overwritten)."""
    out = {k: v for k, v in row.items() if k != ERROR or not unusable(row)}
    for key in result:
        if key in out:
            out[f"input.{key}"] = out.pop(key)
    out.update(result)
    return out


def process_shard(job: Job, source: Path, parts: Path, fmt: str, shard: Shard) -> dict[str, Any]:
    """Run ``job`` over one shard and write its part; returns the shard's summary."""
    started = time.time()
    rows = read_shard(source, shard)
    results = job.run(rows)
    out = [combine(row, result) for row, result in zip(rows, results, strict=True)]
    write_part(part_path(parts, shard, fmt), out, fmt, job.vectors)
    return {
        "shard": shard.index,
        "rows": len(out),
        "errors": sum(1 for r in out if r.get(ERROR) is not None),
        "started": started,
        "finished": time.time(),
        "pid": os.getpid(),
        "rss_mb": _rss_mb(),
    }


class ShardWorker:
    """A Ray Data actor: loads the job's model once, then runs shard after shard (one per call)."""

    def __init__(self, job: Job, source: str, parts: str, fmt: str, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.job, self.source, self.parts, self.fmt = job, Path(source), Path(parts), fmt
        self.job.load()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {}
        for i in range(len(batch["index"])):
            shard = Shard(**{name: int(batch[name][i]) for name in Shard.__dataclass_fields__})
            for key, value in process_shard(self.job, self.source, self.parts, self.fmt, shard).items():
                found.setdefault(key, []).append(value)
        return found


def _fingerprint(job: Job, source: Path, shard_rows: int, fmt: str) -> dict[str, Any]:
    stat = source.stat()
    return {
        "command": job.command,
        "options": json.loads(json.dumps(job.describe(), default=str)),
        "input": {"path": str(source.resolve()), "bytes": stat.st_size, "modified_ns": stat.st_mtime_ns},
        "shard_rows": shard_rows,
        "format": fmt,
    }


def _prepare_parts(parts: Path, output: Path, manifest: dict[str, Any], restart: bool) -> None:
    """Make the parts folder for this job, or check that the one there is for the same job."""
    if restart:
        shutil.rmtree(parts, ignore_errors=True)
        output.unlink(missing_ok=True)
    if parts.is_dir() and (parts / MANIFEST).is_file():
        before = json.loads((parts / MANIFEST).read_text())
        if before != manifest:
            differ = sorted(k for k in manifest if before.get(k) != manifest[k])
            raise ParameterError(
                f"{parts} holds parts of a different job ({', '.join(differ)} differ); pass --restart to start over",
                option="restart",
            )
        for stale in parts.glob("*.partial"):  # a part a killed worker was writing: never renamed, never used
            stale.unlink(missing_ok=True)
        return
    if output.exists():
        raise ParameterError(
            f"{output} already exists (a finished job); pass --restart to run it again", option="restart"
        )
    parts.mkdir(parents=True, exist_ok=True)
    (parts / MANIFEST).write_text(json.dumps(manifest, indent=1))


def run_batch(
    job: Job,
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    ray: str = "auto",
    actors: int | None = None,
    cpus_per_actor: int | None = None,
    shard_rows: int = 256,
    restart: bool = False,
    keep_parts: bool = False,
    progress: Progress | None = None,
    notes: Callable[[str], None] | None = None,
) -> BatchReport:
    """Run ``job`` over ``source`` into ``output`` (see the module doc); ``ray`` is ``auto`` (a Ray cluster:
    ``RAY_ADDRESS`` or a local one started here), an address, or ``off`` (this process).

    ``cpus_per_actor`` is each actor's CPUs and torch threads (default 1); with ``ray="off"`` it sets this
    process's torch threads (default: torch's). The same threads give bit-identical results either way; other
    thread counts may change float sums in the last bits.
    """
    from tokensift.inputs import whole_number

    started = time.perf_counter()
    check_job(job)
    whole_number(shard_rows, "shard_rows", low=1)
    if cpus_per_actor is not None:
        whole_number(cpus_per_actor, "cpus_per_actor", low=1)
    if actors is not None:
        whole_number(actors, "actors", low=1)
    source, output = Path(source), Path(output)
    table_format(source, "INPUT")
    fmt = table_format(output, "OUTPUT")
    if output.is_dir():
        raise ParameterError(f"OUTPUT {output} is a directory; give a file name", option="output")
    if output.resolve() == source.resolve():
        raise ParameterError(f"OUTPUT {output} is the input; give another file name", option="output")
    shards = plan_shards(source, shard_rows)
    if not shards:
        raise InputFileError(f"{source} has no rows")
    clash = [c for c in (*job.columns, ERROR) if c in input_columns(source)]
    if clash:
        raise ParameterError(
            f"the input already has column(s) {', '.join(clash)}, which `batch {job.command}` writes; rename them",
            option="input",
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    parts = output.with_name(output.name + ".parts")
    _prepare_parts(parts, output, _fingerprint(job, source, shard_rows, fmt), restart)
    pending = [s for s in shards if not part_path(parts, s, fmt).exists()]
    total = sum(s.rows for s in shards)
    done = total - sum(s.rows for s in pending)
    summaries: list[dict[str, Any]] = []

    def finished(summary: dict[str, Any]) -> None:
        nonlocal done
        summaries.append(summary)
        done += int(summary["rows"])
        if progress is not None:
            progress(done, total)

    if progress is not None:
        progress(done, total)
    mode, address, n_actors = "off", None, 1
    if pending:
        use_ray = ray != "off" and _ray_available(ray, notes)
        if use_ray:
            mode = "ray"
            address, n_actors = _run_ray(
                job, source, parts, fmt, pending, ray, actors, cpus_per_actor or 1, finished, notes
            )
        else:
            if cpus_per_actor is not None:
                import torch

                torch.set_num_threads(cpus_per_actor)
            job.load()
            for shard in pending:
                finished(process_shard(job, source, parts, fmt, shard))
    written = [part_path(parts, s, fmt) for s in shards]
    for shard, path in zip(shards, written, strict=True):
        if not path.exists() or part_rows(path) != shard.rows:
            raise InputFileError(
                f"shard {shard.index} of {source} is missing or incomplete in {parts}; run again to redo it"
            )
    as_text = merge_parts(written, output, fmt)
    errors = _count_errors(output, fmt)
    if not keep_parts:
        shutil.rmtree(parts, ignore_errors=True)
    work = (max(s["finished"] for s in summaries) - min(s["started"] for s in summaries)) if summaries else 0.0
    return BatchReport(
        command=job.command,
        input=str(source),
        output=str(output),
        mode=mode,
        actors=n_actors,
        rows=total,
        errors=errors,
        shards=len(shards),
        shards_skipped=len(shards) - len(pending),
        seconds=time.perf_counter() - started,
        work_seconds=work,
        rows_run=sum(int(s["rows"]) for s in summaries),
        peak_rss_mb=max([_rss_mb(), *(float(s["rss_mb"]) for s in summaries)]),
        worker_rss_mb=max([0.0, *(float(s["rss_mb"]) for s in summaries)]),
        workers=len({s["pid"] for s in summaries}),
        text_columns=as_text,
        ray_address=address,
    )


def _count_errors(output: Path, fmt: str) -> int:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        column = pq.read_table(output, columns=[ERROR])[ERROR]
        return len(column) - column.null_count
    count = 0
    with output.open("rb") as handle:
        for line in handle:
            count += json.loads(line).get(ERROR) is not None
    return count


def _ray_available(where: str, notes: Callable[[str], None] | None) -> bool:
    try:
        import ray.data  # noqa: F401
    except ImportError:
        if where != "auto":
            raise ParameterError(
                f"--ray {where} needs Ray: pip install 'tokensift[scale]' (or run with --ray off)", option="ray"
            ) from None
        if notes is not None:
            notes("Ray is not installed (pip install 'tokensift[scale]'): running in this process")
        return False
    return True


def _run_ray(
    job: Job,
    source: Path,
    parts: Path,
    fmt: str,
    pending: list[Shard],
    ray_address: str,
    actors: int | None,
    cpus_per_actor: int,
    finished: Callable[[dict[str, Any]], None],
    notes: Callable[[str], None] | None,
) -> tuple[str, int]:
    """Map the pending shards through an actor pool of :class:`ShardWorker` (see the module doc)."""
    import ray
    import ray.data

    from tokensift.batch.cluster import cluster_cpus, connect

    connect(ray_address)
    cpus = cluster_cpus()
    size = actors if actors is not None else max(1, cpus // cpus_per_actor)
    size = min(size, len(pending))
    if size * cpus_per_actor > cpus and notes is not None:
        notes(f"{size} actors × {cpus_per_actor} CPU ask for more than the cluster's {cpus} CPUs; some will wait")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.enable_operator_progress_bars = False
    dataset = ray.data.from_items([s.as_dict() for s in pending], override_num_blocks=len(pending))
    mapped = dataset.map_batches(
        ShardWorker,
        fn_constructor_kwargs={
            "job": job,
            "source": str(source.resolve()),
            "parts": str(parts.resolve()),
            "fmt": fmt,
            "threads": cpus_per_actor,
        },
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=size),
        num_cpus=cpus_per_actor,
        batch_format="numpy",
    )
    try:
        for summary in mapped.iter_rows():
            finished({k: (v.item() if hasattr(v, "item") else v) for k, v in summary.items()})
    except ray.exceptions.RayError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, TokensiftError):
            raise cause from None
        raise InputFileError(
            f"the Ray job failed: {str(exc).splitlines()[0]} (finished shards are kept; run again)"
        ) from None
    address = str(ray.get_runtime_context().gcs_address)
    return address, size
