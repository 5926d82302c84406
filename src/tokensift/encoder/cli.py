"""``tokensift embed``, ``tokensift merges`` and ``tokensift bench encoder``: the encoder commands.

Cheap to import (the CLI loads it at start-up); models, torch and transformers load inside commands.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tokensift import options
from tokensift.bench import cli as bench_cli
from tokensift.errors import EmptyInputError, ParameterError
from tokensift.inputs import parse_options
from tokensift.report.progress import progress_bar

app = typer.Typer(help="Token merging and pruning inside encoders.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)

MethodOpt = Annotated[str, typer.Option(help="Encoder method (see `tokensift methods --target encoder`).")]
ROpt = Annotated[int | None, typer.Option("--r", help="Remove this many tokens per layer instead (ToMe's r).")]
LayersOpt = Annotated[str | None, typer.Option(help="Reduce only at these layers, e.g. 1,2,3 (default: all).")]
TruncateOpt = Annotated[
    bool, typer.Option("--truncate", help="Cut texts longer than the model takes (otherwise: an error).")
]


def _schedule(
    ratio: float | None, keep: float | None, keep_tokens: int | None, r: int | None, layers: str | None, default: float
) -> Any:
    """The schedule the flags ask for (ratio ``default`` when none is given)."""
    from tokensift.encoder.schedule import Schedule
    from tokensift.inputs import parse_list

    if all(v is None for v in (ratio, keep, keep_tokens, r)):
        ratio = default
    layer_list = parse_list(layers, int, option="layers")
    return Schedule(ratio=ratio, keep=keep, keep_tokens=keep_tokens, r=r, layers=layer_list)


def _setup(
    model: str, method: str, options: dict[str, Any], schedule: Any, cache_dir: Path | None
) -> tuple[Any, Any, int]:
    """Check the method, load the model, check the schedule against it; return (loaded, method, max length)."""
    from tokensift.encoder.embed import max_length_for
    from tokensift.encoder.layout import find_layout
    from tokensift.methods import build
    from tokensift.models import load_model

    built = build("encoder", method, **options)
    with err.status(f"loading {model} …"):
        loaded = load_model(model, cache_dir=cache_dir)
    schedule.check(find_layout(loaded.model).n_layers)
    return loaded, built, max_length_for(loaded.tokenizer, loaded.model, loaded.path)


def _lines(file: str, skip_empty: bool) -> tuple[list[int], list[str]]:
    from tokensift.inputs import read_text

    numbers, texts = [], []
    for number, line in enumerate(read_text(file).splitlines(), 1):
        if line.strip():
            numbers.append(number)
            texts.append(line)
        elif not skip_empty:
            raise EmptyInputError(f"line {number} is empty; remove empty lines or pass --skip-empty")
    return numbers, texts


@app.command()
def embed(
    file: Annotated[str, typer.Argument(help="Text file, one text per line, or - for standard input.")],
    method: MethodOpt = "tome",
    ratio: options.Ratio = None,
    keep: options.Keep = None,
    keep_tokens: options.KeepTokens = None,
    r: ROpt = None,
    layers: LayersOpt = None,
    option: options.Option = None,
    model: options.Model = "minilm-l6",
    batch_size: Annotated[int, typer.Option(help="Texts per forward pass.")] = 32,
    truncate: TruncateOpt = False,
    skip_empty: Annotated[bool, typer.Option("--skip-empty", help="Skip empty lines instead of failing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON record per line, with its vector.")] = False,
    out_file: Annotated[Path | None, typer.Option("--out", help="Save the embeddings as a .npy [lines, dim].")] = None,
    cache_dir: options.CacheDir = None,
) -> None:
    """Sentence embeddings (sentence-transformers-compatible) with tokens merged or pruned inside the encoder.

    The budget (--ratio, --keep, --keep-tokens) is what the last layer keeps of each text; none given: the
    exact model."""
    import numpy as np

    from tokensift.encoder.embed import sentence_embeddings

    if out_file is not None and (out_file.is_dir() or out_file.suffix != ".npy"):
        raise ParameterError(f"--out {out_file} must be a .npy file name")
    schedule = _schedule(ratio, keep, keep_tokens, r, layers, default=0.0)
    method_options = parse_options(option)
    if batch_size < 1:
        raise ParameterError(f"--batch-size must be at least 1, got {batch_size}", option="batch_size")
    numbers, texts = _lines(file, skip_empty)
    loaded, built, max_length = _setup(model, method, method_options, schedule, cache_dir)
    started = time.perf_counter()
    with progress_bar() as bar:
        task = bar.add_task("embedding", total=len(texts))
        result = sentence_embeddings(
            loaded.model,
            loaded.tokenizer,
            texts,
            method=built,
            schedule=schedule,
            batch_size=batch_size,
            max_length=max_length,
            truncate=truncate,
            progress=lambda done, total: bar.update(task, completed=done),
        )
    seconds = time.perf_counter() - started
    if out_file is not None:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        np.save(out_file, result.embeddings)
        err.print(f"wrote {out_file} {result.embeddings.shape}")
    if as_json:
        records = [
            {"line": n, "tokens": int(t), "kept_tokens": int(k), "embedding": [round(float(x), 6) for x in vector]}
            for n, t, k, vector in zip(numbers, result.tokens, result.kept, result.embeddings, strict=True)
        ]
        print(json.dumps(records))
    elif out_file is None:
        budget = schedule.budget.describe() if r is None else f"r={r}"
        table = Table(title=f"{loaded.name} · {method} · {budget}")
        for column in ("line", "tokens", "kept", "embedding[:4]"):
            table.add_column(column)
        for n, t, k, vector in zip(numbers, result.tokens, result.kept, result.embeddings, strict=True):
            table.add_row(str(n), str(t), str(k), " ".join(f"{x:+.3f}" for x in vector[:4]))
        out.print(table)
    note = f"; {len(result.truncated)} truncated" if result.truncated else ""
    err.print(
        f"{len(texts)} embeddings in {seconds:.2f} s ({len(texts) / seconds:.1f}/s); "
        f"tokens kept {result.kept.sum() / result.tokens.sum():.0%}{note}"
    )


@app.command()
def merges(
    file: Annotated[str, typer.Argument(help="Text file (one text), or - for standard input.")],
    method: MethodOpt = "tome",
    ratio: options.Ratio = None,
    keep: options.Keep = None,
    keep_tokens: options.KeepTokens = None,
    r: ROpt = None,
    layers: LayersOpt = None,
    option: options.Option = None,
    model: options.Model = "minilm-l6",
    truncate: TruncateOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print tokens and groups as JSON.")] = False,
    html: Annotated[Path | None, typer.Option("--html", help="Write a self-contained HTML view here.")] = None,
    cache_dir: options.CacheDir = None,
) -> None:
    """Show which input tokens an encoder method merged (or pruned) into each output token (default --ratio 0.5)."""
    from tokensift.encoder.merges import merge_view, merges_html, print_merges
    from tokensift.inputs import read_text

    text = read_text(file).strip()
    if html is not None and html.is_dir():
        raise ParameterError(f"--html {html} is a directory; give a file name")
    schedule = _schedule(ratio, keep, keep_tokens, r, layers, default=0.5)
    loaded, built, max_length = _setup(model, method, parse_options(option), schedule, cache_dir)
    view = merge_view(
        loaded.model,
        loaded.tokenizer,
        text,
        built,
        schedule,
        method_name=method,
        max_length=max_length,
        truncate=truncate,
    )
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(merges_html(view), encoding="utf-8")
        err.print(f"wrote {html}")
    if as_json:
        print(json.dumps(view.as_dict(), ensure_ascii=False))
    else:
        print_merges(out, view)


def _bench_options(
    passages: Annotated[int, typer.Option(help="NQ-Open gold passages in the retrieval corpus.")] = 1000,
    speed_texts: Annotated[int, typer.Option(help="Passages timed at batch 32 (batch 1: a quarter).")] = 32,
    threads: Annotated[int, typer.Option(help="torch threads (the speed figures are for this many cores).")] = 2,
    batch_size: Annotated[int, typer.Option(help="Texts per forward pass.")] = 32,
) -> dict[str, Any]:
    """Encoder methods x ratios: NQ retrieval (recall@1/@10), cosine fidelity on NQ passages and WikiText-2
    sentences (--samples of them), embeddings/s; resumable rows, summary CSV, plots, report."""
    return {"passages": passages, "speed_texts": speed_texts, "threads": threads, "batch_size": batch_size}


def _benchmark() -> Any:
    from tokensift.encoder.bench import EncoderBenchmark

    return EncoderBenchmark


bench = bench_cli.command("encoder", _benchmark, _bench_options, out=Path("benchmarks/out/encoder"))
