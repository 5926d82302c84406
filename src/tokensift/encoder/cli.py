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

from tokensift.errors import EmptyInputError, ParameterError
from tokensift.report.progress import progress_bar

app = typer.Typer(help="Token merging and pruning inside encoders.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)

MethodOpt = Annotated[str, typer.Option(help="Encoder method (see `tokensift methods --target encoder`).")]
RatioOpt = Annotated[
    float, typer.Option(help="Fraction of each text's tokens removed by the last layer, in [0, 1); 0 = exact model.")
]
ROpt = Annotated[int | None, typer.Option("--r", help="Remove this many tokens per layer instead (ToMe's r).")]
LayersOpt = Annotated[str | None, typer.Option(help="Reduce only at these layers, e.g. 1,2,3 (default: all).")]
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Encoder: embedded name or local model folder.")]
TruncateOpt = Annotated[
    bool, typer.Option("--truncate", help="Cut texts longer than the model takes (otherwise: an error).")
]
CacheOpt = Annotated[Path | None, typer.Option("--cache-dir", help="Converted-model cache.")]


def parse_layers(layers: str | None) -> tuple[int, ...] | None:
    """``"1,2,3"`` -> ``(1, 2, 3)``; :class:`ParameterError` for anything else."""
    if layers is None:
        return None
    try:
        return tuple(int(part) for part in layers.split(",") if part.strip())
    except ValueError:
        raise ParameterError(f"--layers expects comma-separated layer numbers, got {layers!r}") from None


def _schedule(ratio: float, r: int | None, layers: str | None) -> Any:
    from tokensift.encoder.schedule import Schedule

    return Schedule(ratio=None if r is not None else ratio, r=r, layers=parse_layers(layers))


def _setup(model: str, method: str, schedule: Any, cache_dir: Path | None) -> tuple[Any, Any, int]:
    """Check the method, load the model, check the schedule against it; return (loaded, method, max length)."""
    from tokensift.encoder.embed import max_length_for
    from tokensift.encoder.layout import find_layout
    from tokensift.encoder.patch import build_method
    from tokensift.models import load_model

    built = build_method(method)
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
    ratio: RatioOpt = 0.0,
    r: ROpt = None,
    layers: LayersOpt = None,
    model: ModelOpt = "minilm-l6",
    batch_size: Annotated[int, typer.Option(help="Texts per forward pass.")] = 32,
    truncate: TruncateOpt = False,
    skip_empty: Annotated[bool, typer.Option("--skip-empty", help="Skip empty lines instead of failing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON record per line, with its vector.")] = False,
    out_file: Annotated[Path | None, typer.Option("--out", help="Save the embeddings as a .npy [lines, dim].")] = None,
    cache_dir: CacheOpt = None,
) -> None:
    """Sentence embeddings (sentence-transformers-compatible) with tokens merged or pruned inside the encoder."""
    import numpy as np

    from tokensift.encoder.embed import sentence_embeddings

    if out_file is not None and (out_file.is_dir() or out_file.suffix != ".npy"):
        raise ParameterError(f"--out {out_file} must be a .npy file name")
    numbers, texts = _lines(file, skip_empty)
    schedule = _schedule(ratio, r, layers)
    loaded, built, max_length = _setup(model, method, schedule, cache_dir)
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
        table = Table(title=f"{loaded.name} · {method} · ratio {ratio:g}" if r is None else f"{method} · r={r}")
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
    ratio: Annotated[float, typer.Option(help="Fraction of the tokens removed by the last layer, in [0, 1).")] = 0.5,
    r: ROpt = None,
    layers: LayersOpt = None,
    model: ModelOpt = "minilm-l6",
    truncate: TruncateOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print tokens and groups as JSON.")] = False,
    html: Annotated[Path | None, typer.Option("--html", help="Write a self-contained HTML view here.")] = None,
    cache_dir: CacheOpt = None,
) -> None:
    """Show which input tokens an encoder method merged (or pruned) into each output token."""
    from tokensift.encoder.merges import merge_view, merges_html, print_merges
    from tokensift.inputs import read_text

    text = read_text(file).strip()
    if html is not None and html.is_dir():
        raise ParameterError(f"--html {html} is a directory; give a file name")
    schedule = _schedule(ratio, r, layers)
    loaded, built, max_length = _setup(model, method, schedule, cache_dir)
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


def bench(
    out_dir: Annotated[Path, typer.Option("--out", help="Results folder (resumable).")] = Path("bench-encoder"),
    model: ModelOpt = "minilm-l6",
    methods: Annotated[str | None, typer.Option(help="Comma-separated methods (default: all encoder methods).")] = None,
    ratios: Annotated[str, typer.Option(help="Fractions of tokens removed (keep 75/50/35 %).")] = "0.25,0.5,0.65",
    passages: Annotated[int, typer.Option(help="NQ-Open questions; their gold passages form the corpus.")] = 1000,
    sentences: Annotated[int, typer.Option(help="WikiText-2 sentences for cosine fidelity.")] = 300,
    speed_texts: Annotated[int, typer.Option(help="Passages timed at batch 32 (batch 1: a quarter).")] = 32,
    threads: Annotated[int, typer.Option(help="torch threads (the speed figures are for this many cores).")] = 2,
    data_dir: Annotated[Path | None, typer.Option(help="Evaluation data (default ../shared/data).")] = None,
    results: Annotated[Path | None, typer.Option(help="Also write the Markdown report to this file.")] = None,
    report_only: Annotated[
        bool, typer.Option("--report-only", help="Report the rows stored so far; compute no missing cells.")
    ] = False,
    cache_dir: CacheOpt = None,
) -> None:
    """Encoder methods x removal ratios on all-MiniLM-L6-v2: NQ retrieval, cosine fidelity, embeddings/s."""
    from tokensift.encoder.bench import BenchConfig, run_bench

    config = BenchConfig(
        model=model,
        methods=tuple(m.strip() for m in methods.split(",")) if methods else None,
        ratios=_ratios(ratios),
        passages=passages,
        sentences=sentences,
        speed_texts=speed_texts,
        threads=threads,
    )
    report = run_bench(
        config, out_dir, data_dir=data_dir, results=results, cache_dir=cache_dir, report_only=report_only
    )
    err.print(f"wrote {report}")


def _ratios(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ParameterError(f"--ratios expects comma-separated numbers, got {text!r}") from None
    bad = [x for x in values if not 0.0 < x < 1.0]
    if not values or bad:
        raise ParameterError(f"--ratios must be fractions in (0, 1), got {text!r}")
    return values
