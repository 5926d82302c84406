"""``tokensift batch {inspect,compress,embed,score-data,kv-compress} INPUT OUTPUT``: a command over a table.

Cheap to import (the CLI loads it at start-up): Ray, pyarrow and the models load when a command runs. Every
command takes the shared options (``--text-field``, ``--ray``, ``--actors``, ``--batch-size``, ``--shard-rows``,
``--restart``, ``--json``) and its single-file counterpart's own options.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from tokensift import options
from tokensift.bench import cli as bench_cli

app = typer.Typer(
    help="Run a command over every row of a JSONL or Parquet table, in Ray actors or one process; resumable.",
    no_args_is_help=True,
)
out = Console()
err = Console(stderr=True)

Input = Annotated[Path, typer.Argument(metavar="INPUT", help="Input table: .jsonl (JSON lines) or .parquet.")]
Output = Annotated[
    Path, typer.Argument(metavar="OUTPUT", help="Output table: .parquet, or .jsonl; every input column passed through.")
]
TextField = Annotated[str, typer.Option(help="The column holding each row's text.")]
Ray = Annotated[
    str, typer.Option(help="auto (RAY_ADDRESS or a local Ray started here), a Ray address, or off (this process).")
]
Actors = Annotated[int | None, typer.Option(help="Ray actors, each holding the model once (default: one per CPU).")]
CpusPerActor = Annotated[
    int | None, typer.Option(help="CPUs (torch threads) per actor (default 1); with --ray off: torch threads.")
]
ShardRows = Annotated[int, typer.Option(help="Rows per shard: the unit of work, of resuming and of retries.")]
Restart = Annotated[bool, typer.Option("--restart", help="Delete an earlier run's parts and output; start over.")]
MaxTokens = Annotated[int, typer.Option(help="A longer row gets an error (never cut).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the job's report as JSON.")]


def _run(job: Any, source: Path, output: Path, common: dict[str, Any], as_json: bool) -> None:
    import signal

    from tokensift.batch.runner import run_batch
    from tokensift.report.progress import progress_bar

    def _stop(signum: int, frame: Any) -> None:  # a scheduler's stop: finished shards stay, a re-run resumes
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    bar = progress_bar(transient=False)
    task = bar.add_task(f"batch {job.command}", total=None)

    def progress(done: int, total: int) -> None:  # the bar appears once the job's checks have passed
        bar.start()
        bar.update(task, completed=done, total=total)

    try:
        report = run_batch(
            job, source, output, progress=progress, notes=lambda text: err.print(f"note: {text}"), **common
        )
    finally:
        bar.stop()
    if as_json:
        print(json.dumps(report.as_dict()))
        return
    where = f"Ray, {report.actors} actor(s)" if report.mode == "ray" else "one process"
    skipped = f", {report.shards_skipped} already done" if report.shards_skipped else ""
    err.print(
        f"{report.rows:,} rows → {report.output} ({report.errors:,} with an error) · {report.shards} shards{skipped} · "
        f"{where} · {report.rows_per_second:.2f} rows/s working, {report.seconds:.1f} s in all · "
        f"peak RSS {report.peak_rss_mb:,.0f} MiB",
        highlight=False,
    )
    if report.text_columns:
        err.print(f"note: column(s) {', '.join(report.text_columns)} mix types; written as JSON text")


def _common(ray: str, actors: int | None, cpus_per_actor: int | None, shard_rows: int, restart: bool) -> dict[str, Any]:
    return {
        "ray": ray,
        "actors": actors,
        "cpus_per_actor": cpus_per_actor,
        "shard_rows": shard_rows,
        "restart": restart,
    }


@app.command()
def inspect(
    source: Input,
    output: Output,
    model: options.Model = "smollm2-135m",
    quantile: Annotated[float, typer.Option(help="Flag tokens above this quantile of the row's surprisals.")] = 0.95,
    zscore: Annotated[float | None, typer.Option(help="Flag tokens above mean + Z std instead.")] = None,
    max_tokens: MaxTokens = 4096,
    text_field: TextField = "text",
    batch_size: Annotated[int, typer.Option(help="Rows per model call.")] = 8,
    ray: Ray = "auto",
    actors: Actors = None,
    cpus_per_actor: CpusPerActor = None,
    shard_rows: ShardRows = 64,
    restart: Restart = False,
    as_json: AsJson = False,
    cache_dir: options.CacheDir = None,
) -> None:
    """Each row's per-token surprisal and entropy (columns tokens, surprisal, entropy, flagged, perplexity)."""
    from tokensift.batch.jobs import InspectJob
    from tokensift.inspection import FlagRule

    FlagRule(quantile=quantile, zscore=zscore)
    job = InspectJob(
        model=model,
        text_field=text_field,
        max_tokens=max_tokens,
        cache_dir=_dir(cache_dir),
        batch_size=batch_size,
        quantile=quantile,
        zscore=zscore,
    )
    _run(job, source, output, _common(ray, actors, cpus_per_actor, shard_rows, restart), as_json)


@app.command()
def embed(
    source: Input,
    output: Output,
    method: Annotated[str, typer.Option(help="Encoder method (see `tokensift methods --target encoder`).")] = "tome",
    ratio: options.Ratio = None,
    keep: options.Keep = None,
    keep_tokens: options.KeepTokens = None,
    r: Annotated[int | None, typer.Option("--r", help="Remove this many tokens per layer instead (ToMe's r).")] = None,
    layers: Annotated[str | None, typer.Option(help="Reduce only at these layers, e.g. 1,2,3.")] = None,
    option: options.Option = None,
    model: options.Model = "minilm-l6",
    truncate: Annotated[
        bool, typer.Option("--truncate", help="Cut over-long texts (otherwise: the row's error).")
    ] = False,
    text_field: TextField = "text",
    batch_size: Annotated[int, typer.Option(help="Texts per forward pass.")] = 32,
    ray: Ray = "auto",
    actors: Actors = None,
    cpus_per_actor: CpusPerActor = None,
    shard_rows: ShardRows = 256,
    restart: Restart = False,
    as_json: AsJson = False,
    cache_dir: options.CacheDir = None,
) -> None:
    """Sentence embeddings with tokens merged or pruned in the encoder (columns embedding, tokens, kept_tokens);
    no budget: the exact model."""
    from tokensift.batch.jobs import EmbedJob
    from tokensift.encoder.cli import _schedule
    from tokensift.inputs import parse_options
    from tokensift.methods import build

    schedule = _schedule(ratio, keep, keep_tokens, r, layers, default=0.0)
    method_options = parse_options(option)
    build("encoder", method, **method_options)
    job = EmbedJob(
        model=model,
        text_field=text_field,
        cache_dir=_dir(cache_dir),
        batch_size=batch_size,
        method=method,
        schedule={
            "ratio": schedule.ratio,
            "keep": schedule.keep,
            "keep_tokens": schedule.keep_tokens,
            "r": schedule.r,
            "layers": schedule.layers,
        },
        options=method_options,
        truncate=truncate,
    )
    _run(job, source, output, _common(ray, actors, cpus_per_actor, shard_rows, restart), as_json)


@app.command()
def compress(
    source: Input,
    output: Output,
    ratio: options.Ratio = None,
    keep: options.Keep = None,
    keep_tokens: options.KeepTokens = None,
    rate: Annotated[float | None, typer.Option(help="LLMLingua's name for --keep.")] = None,
    method: Annotated[str, typer.Option(help="Text method (see `tokensift methods --target text`).")] = "llmlingua",
    question_field: Annotated[
        str | None, typer.Option(help="Column with each row's question (question-aware methods).")
    ] = None,
    option: options.Option = None,
    model: options.Model = "smollm2-135m",
    max_tokens: MaxTokens = 8192,
    text_field: TextField = "text",
    ray: Ray = "auto",
    actors: Actors = None,
    cpus_per_actor: CpusPerActor = None,
    shard_rows: ShardRows = 64,
    restart: Restart = False,
    as_json: AsJson = False,
    cache_dir: options.CacheDir = None,
) -> None:
    """Each text compressed to an exact token budget (columns compressed, tokens_before, tokens_after)."""
    from tokensift.batch.jobs import CompressJob
    from tokensift.inputs import parse_options
    from tokensift.methods import resolve
    from tokensift.text.api import make_budget

    make_budget(ratio, keep, keep_tokens, rate)
    method_options = parse_options(option)
    resolve("text", method, **method_options)
    budget = {"ratio": ratio, "keep": keep, "keep_tokens": keep_tokens, "rate": rate}
    job = CompressJob(
        model=model,
        text_field=text_field,
        max_tokens=max_tokens,
        cache_dir=_dir(cache_dir),
        batch_size=1,
        method=method,
        budget={k: v for k, v in budget.items() if v is not None},
        options=method_options,
        question_field=question_field,
    )
    _run(job, source, output, _common(ray, actors, cpus_per_actor, shard_rows, restart), as_json)


@app.command("score-data")
def score_data(
    source: Input,
    output: Output,
    method: Annotated[str, typer.Option(help="Data scorer: sifd (T-SHIRT) or ifd.")] = "sifd",
    option: options.Option = None,
    model: options.Model = "smollm2-135m",
    max_tokens: MaxTokens = 2048,
    batch_size: Annotated[int, typer.Option(help="Rows per model call.")] = 8,
    ray: Ray = "auto",
    actors: Actors = None,
    cpus_per_actor: CpusPerActor = None,
    shard_rows: ShardRows = 256,
    restart: Restart = False,
    as_json: AsJson = False,
    cache_dir: options.CacheDir = None,
) -> None:
    """Each instruction example's data score (rows in score-data's shapes: Alpaca, prompt/response,
    question/answer, chat messages; columns score, ifd, response_tokens, informative)."""
    from tokensift.batch.jobs import ScoreDataJob
    from tokensift.inputs import parse_options
    from tokensift.methods import build

    method_options = parse_options(option)
    build("training", method, **method_options)
    job = ScoreDataJob(
        model=model,
        max_tokens=max_tokens,
        cache_dir=_dir(cache_dir),
        batch_size=batch_size,
        method=method,
        options=method_options,
    )
    _run(job, source, output, _common(ray, actors, cpus_per_actor, shard_rows, restart), as_json)


@app.command("kv-compress")
def kv_compress(
    source: Input,
    output: Output,
    method: Annotated[str, typer.Option(help="KV method or composition (none: keep the whole cache).")] = "kvzip",
    ratio: options.Ratio = None,
    keep: options.Keep = None,
    keep_tokens: options.KeepTokens = None,
    option: options.Option = None,
    store: Annotated[
        Path | None, typer.Option(help="Context store folder (default: <cache>/contexts, what serve reads).")
    ] = None,
    model: options.Model = "smollm2-135m",
    max_tokens: MaxTokens = 4096,
    text_field: TextField = "text",
    ray: Ray = "auto",
    actors: Actors = None,
    cpus_per_actor: CpusPerActor = None,
    shard_rows: ShardRows = 16,
    restart: Restart = False,
    as_json: AsJson = False,
    cache_dir: options.CacheDir = None,
) -> None:
    """Each text prefilled and its KV cache compressed into a context store that `tokensift serve --store`
    answers from (columns context_id, tokens, bytes_full, bytes_stored); default --ratio 0.5."""
    from tokensift.batch.jobs import KVCompressJob
    from tokensift.inputs import parse_options
    from tokensift.kv.api import press_from

    method_options = parse_options(option)
    if ratio is None and keep is None and keep_tokens is None:
        ratio = 0.5
    budget: dict[str, Any] = {"ratio": ratio, "keep": keep, "keep_tokens": keep_tokens}
    if method != "none":
        press_from(method, ratio=ratio, keep=keep, keep_tokens=keep_tokens, **method_options)
    job = KVCompressJob(
        model=model,
        text_field=text_field,
        max_tokens=max_tokens,
        cache_dir=_dir(cache_dir),
        method=method,
        budget={k: v for k, v in budget.items() if v is not None},
        options=method_options,
        store=str(store.resolve()) if store is not None else "",
    )
    _run(job, source, output, _common(ray, actors, cpus_per_actor, shard_rows, restart), as_json)


def _dir(path: Path | None) -> str | None:
    return str(path.resolve()) if path is not None else None


def _bench_options(
    embed_rows: Annotated[int, typer.Option(help="NQ-Open gold passages embedded per run.")] = 2000,
    inspect_rows: Annotated[int, typer.Option(help="WikiText-2 paragraphs (≤ 120 words) inspected per run.")] = 160,
    shard_rows: Annotated[int, typer.Option(help="Rows per shard (0: about 24 shards per task).")] = 0,
) -> dict[str, Any]:
    """rows/s of `tokensift batch embed` and `batch inspect` run in one process (off, off-1) and on 1 and 2 Ray
    actors (--methods off,off-1,actors-1,actors-2), each output checked against off-1 row for row."""
    from tokensift.inputs import whole_number

    for value, name in ((embed_rows, "embed_rows"), (inspect_rows, "inspect_rows")):
        whole_number(value, name, low=1)
    whole_number(shard_rows, "shard_rows", low=0)
    return {"embed_rows": embed_rows, "inspect_rows": inspect_rows, "shard_rows": shard_rows}


def _benchmark() -> Any:
    from tokensift.batch.bench import ScaleBenchmark

    return ScaleBenchmark


bench = bench_cli.command("scale", _benchmark, _bench_options, out=Path("benchmarks/out/scale"))
