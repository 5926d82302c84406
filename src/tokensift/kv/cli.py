"""``tokensift kv generate`` and ``tokensift bench kv`` (attached in :mod:`tokensift.cli`). Cheap to import."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tokensift.errors import ParameterError

app = typer.Typer(help="KV-cache compression for Hugging Face causal LMs.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)

ALL_METHODS = "random,streaming_llm,h2o,tova,snapkv,pyramidkv,knorm,keydiff,expected_attention,chunkkv,a2sf,adakv,kvzip"
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Embedded model name or local model folder.")]
CacheOpt = Annotated[Path | None, typer.Option("--cache-dir", help="Converted-model cache folder.")]
DataOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Evaluation data (default $TOKENSIFT_DATA or ../shared/data).")
]


def _load(model: str, cache_dir: Path | None) -> Any:
    from tokensift.models import load_model

    with err.status(f"loading {model} …"):
        return load_model(model, cache_dir=cache_dir)


def _csv(text: str, kind: type = str) -> list[Any]:
    try:
        return [kind(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ParameterError(f"cannot read {text!r} as a comma-separated list of {kind.__name__}") from None


@app.command()
def generate(
    context: Annotated[Path, typer.Option("--context", help="Text file with the context to compress (- for stdin).")],
    question: Annotated[str, typer.Option("--question", "-q", help="The question, kept out of compression.")],
    model: ModelOpt = "smollm2-135m",
    method: Annotated[str, typer.Option(help="KV method (see `tokensift methods --target kv`).")] = "chunkkv",
    ratio: Annotated[float, typer.Option(help="Fraction of the context's cache to remove, in [0, 1).")] = 0.5,
    keep_tokens: Annotated[int | None, typer.Option(help="Absolute budget per head instead of --ratio.")] = None,
    query_aware: Annotated[bool, typer.Option("--query-aware", help="Compress with the question in view.")] = False,
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer.")] = 48,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON document.")] = False,
    cache_dir: CacheOpt = None,
) -> None:
    """Compress the context's KV cache, answer the question from it, and report what it cost."""
    import torch

    from tokensift.inputs import read_text
    from tokensift.kv.attach import build_press
    from tokensift.kv.qa import answer, compress_context
    from tokensift.kv.tasks import Sample, split_prompt

    build_press(method, ratio=ratio, keep_tokens=keep_tokens)  # bad options fail before the model loads
    loaded = _load(model, cache_dir)
    press = build_press(method, ratio=ratio, keep_tokens=keep_tokens, tokenizer=loaded.tokenizer)
    sample = Sample("generate", "cli", read_text(str(context)), question=question)
    head, tail = split_prompt(loaded.tokenizer, sample, query_aware)
    compressed = compress_context(loaded.model, torch.tensor([head]), press)
    eos = loaded.tokenizer.eos_token_id
    result = answer(
        loaded.model,
        compressed,
        torch.tensor([tail]),
        max_new_tokens=max_new_tokens,
        stop_ids={eos} if eos is not None else None,
    )
    text = loaded.tokenizer.decode(result.ids[0], skip_special_tokens=True).strip()
    stats = compressed.stats
    report = {
        "answer": text,
        "model": loaded.name,
        "method": method,
        "ratio": ratio,
        "keep_tokens": keep_tokens,
        "mode": "query-aware" if query_aware else "query-agnostic",
        "context_tokens": len(head),
        "question_tokens": len(tail),
        "cache_bytes_before": stats.bytes_before,
        "cache_bytes_after": stats.bytes_after,
        "kept_fraction": stats.kept_fraction,
        "prefill_seconds": compressed.prefill_seconds,
        "scoring_seconds": stats.scoring_seconds,
        "decode_seconds_per_token": result.decode_seconds_per_token,
        "tokens_kept_per_layer_head": {r.layer: r.kept[0] for r in stats.layers},
    }
    if as_json:
        print(json.dumps(report, ensure_ascii=False))
        return
    out.print(f"[bold]answer:[/bold] {text}")
    table = Table(title=f"{method} · {report['mode']}")
    for column in ("context tokens", "cache before", "cache after", "kept", "prefill", "scoring", "decode/token"):
        table.add_column(column)
    table.add_row(
        str(len(head)),
        f"{stats.bytes_before / 2**20:.2f} MiB",
        f"{stats.bytes_after / 2**20:.2f} MiB",
        f"{stats.kept_fraction:.1%}",
        f"{compressed.prefill_seconds:.2f} s",
        f"{stats.scoring_seconds:.2f} s",
        f"{result.decode_seconds_per_token * 1000:.0f} ms",
    )
    out.print(table)
    if stats.layers:
        kept = [n for r in stats.layers for n in r.kept[0]]
        out.print(f"tokens kept per head: min {min(kept)}, max {max(kept)} over {len(stats.layers)} compressed layers")


def bench(
    model: ModelOpt = "smollm2-135m",
    tasks: Annotated[
        str, typer.Option(help="Comma-separated: niah, niah_multikey, niah_multivalue, kv_retrieval, nq_qa, fidelity.")
    ] = "niah,niah_multikey,nq_qa,fidelity",
    methods: Annotated[str, typer.Option(help="Comma-separated KV methods.")] = ALL_METHODS,
    ratios: Annotated[
        str, typer.Option(help="Comma-separated compression ratios (fraction removed).")
    ] = "0.5,0.75,0.875",
    samples: Annotated[int, typer.Option(help="Samples per task.")] = 30,
    fidelity_samples: Annotated[int | None, typer.Option(help="Samples for fidelity (default --samples).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the task instances.")] = 0,
    length: Annotated[int, typer.Option(help="Context tokens for niah and fidelity.")] = 1024,
    modes: Annotated[str, typer.Option(help="query-agnostic, query-aware or both.")] = "query-agnostic,query-aware",
    speed_tokens: Annotated[
        int, typer.Option(help="Tokens decoded per decode-speed cell at 2k context (0: skip).")
    ] = 16,
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder (rows.jsonl is resumed).")] = Path(
        "benchmarks/out/kv"
    ),
    data_dir: DataOpt = None,
    cache_dir: CacheOpt = None,
) -> None:
    """KV benchmark: tasks x methods x ratios, both modes; resumable rows, summary CSV, plots, report."""
    from tokensift.inputs import data_dir as resolve_data
    from tokensift.kv.bench import BenchConfig, plan, run_bench, write_kv_report
    from tokensift.kv.tasks import TASKS
    from tokensift.methods import get_method
    from tokensift.report.progress import progress_bar

    config = BenchConfig(
        model=model,
        tasks=_csv(tasks),
        methods=_csv(methods),
        ratios=_csv(ratios, float),
        samples=samples,
        seed=seed,
        out=out_dir,
        data=resolve_data(data_dir) or Path("../shared/data"),
        length=length,
        modes=tuple(_csv(modes)),
        fidelity_samples=fidelity_samples,
        speed_tokens=speed_tokens,
    )
    for task in config.tasks:
        if task not in TASKS:
            raise ParameterError(f"unknown kv task {task!r}; tasks: {', '.join(TASKS)}")
    for name in config.methods:
        get_method(name, "kv")
    for ratio in config.ratios:
        if not 0.0 <= ratio < 1.0:
            raise ParameterError(f"compression ratio must be in [0, 1), got {ratio}")
    loaded = _load(model, cache_dir)
    total = len(plan(config)) + (1 if speed_tokens else 0)
    with progress_bar(transient=False) as bar:
        job = bar.add_task("kv bench", total=total)

        def step(description: str, done: int) -> None:
            bar.update(job, completed=done, description=description)

        store = run_bench(config, loaded.model, loaded.tokenizer, step)
        bar.update(job, completed=total)
    report = write_kv_report(config, store.rows())
    err.print(f"wrote {report}")
