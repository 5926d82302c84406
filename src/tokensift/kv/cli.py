"""``tokensift kv generate`` and ``tokensift bench kv`` (attached in :mod:`tokensift.cli`). Cheap to import."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tokensift import options
from tokensift.bench import cli as bench_cli

app = typer.Typer(help="KV-cache compression for Hugging Face causal LMs.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)


def _load(model: str, cache_dir: Path | None) -> Any:
    from tokensift.models import load_model

    with err.status(f"loading {model} …"):
        return load_model(model, cache_dir=cache_dir)


@app.command()
def generate(
    context: Annotated[Path, typer.Option("--context", help="Text file with the context to compress (- for stdin).")],
    question: Annotated[str, typer.Option("--question", "-q", help="The question, kept out of compression.")],
    model: options.Model = "smollm2-135m",
    method: Annotated[
        str, typer.Option(help="KV method or composition such as adakv:kvzip (see `tokensift methods --target kv`).")
    ] = "chunkkv",
    ratio: options.Ratio = None,
    keep: options.Keep = None,
    keep_tokens: options.KeepTokens = None,
    option: options.Option = None,
    bits: Annotated[
        int | None,
        typer.Option(help="Low precision (2, 4 or 8) of the tokens a packing method (such as quant2:snapkv) stores."),
    ] = None,
    query_aware: Annotated[bool, typer.Option("--query-aware", help="Compress with the question in view.")] = False,
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer.")] = 48,
    prefill_chunk: Annotated[
        int,
        typer.Option(
            help="Prefill the context this many tokens at a time (0: in one pass); compression still sees the whole "
            "context unless --bounded."
        ),
    ] = 2048,
    bounded: Annotated[
        bool,
        typer.Option(
            "--bounded",
            help="Compress after every prefill chunk, so the cache never holds more than its budget plus one chunk "
            "(a method that can score what the cache holds now; later chunks see only the kept tokens).",
        ),
    ] = False,
    as_json: options.Json = False,
    cache_dir: options.CacheDir = None,
) -> None:
    """Compress the context's KV cache, answer the question from it, and report what it cost.

    The budget (--ratio, --keep, --keep-tokens per head) applies to the context's cache; without one, half of
    it is removed (--ratio 0.5). For a method that packs what it does not keep (quant2:snapkv, say) --ratio is
    the fraction of the context's tokens not kept at full precision and --bits their precision; qprune:METHOD
    evicts --ratio of them and packs the rest at --bits (default 4).
    """
    import torch

    from tokensift.errors import ParameterError
    from tokensift.inputs import parse_options, read_text
    from tokensift.kv.api import press_from
    from tokensift.kv.qa import answer, compress_context
    from tokensift.kv.tasks import Sample, split_prompt

    if ratio is None and keep is None and keep_tokens is None:
        ratio = 0.5
    method_options = parse_options(option)
    if bits is not None:
        method_options["bits"] = bits
    budget: dict[str, Any] = {"ratio": ratio, "keep": keep, "keep_tokens": keep_tokens}
    press_from(method, **budget, **method_options)  # bad options fail before the model loads
    if max_new_tokens < 1:
        raise ParameterError(f"--max-new-tokens must be at least 1, got {max_new_tokens}", option="max_new_tokens")
    if not question.strip():
        raise ParameterError("--question is empty", option="question")
    if prefill_chunk < 0:
        raise ParameterError(
            f"--prefill-chunk must be 0 (one pass) or positive, got {prefill_chunk}", option="prefill_chunk"
        )
    text = read_text(str(context))
    loaded = _load(model, cache_dir)
    press = press_from(method, **budget, tokenizer=loaded.tokenizer, **method_options)
    sample = Sample("generate", "cli", text, question=question)
    head, tail = split_prompt(loaded.tokenizer, sample, query_aware)
    from tokensift.report.progress import progress_bar

    with progress_bar() as bar:
        task = bar.add_task(f"prefill ({len(head)} tokens)", total=len(head))
        compressed = compress_context(
            loaded.model,
            torch.tensor([head], device=loaded.model.device),
            press,
            chunk_size=prefill_chunk or None,
            bounded=bounded,
            progress=lambda done, _total: bar.update(task, completed=done),
        )
    eos = loaded.tokenizer.eos_token_id
    result = answer(
        loaded.model,
        compressed,
        torch.tensor([tail], device=loaded.model.device),
        max_new_tokens=max_new_tokens,
        stop_ids={eos} if eos is not None else None,
        decode=press,
    )
    answer_text = loaded.tokenizer.decode(result.ids[0], skip_special_tokens=True).strip()
    stats = compressed.stats
    from tokensift.kv.probe import pass_dtype

    precision = getattr(getattr(press, "scorer", None), "pass_dtype", None)  # kvzip's repeat pass, if any
    pass_precision = None if precision is None else pass_dtype(loaded.model, precision) or loaded.model.dtype
    report = {
        "answer": answer_text,
        "model": loaded.name,
        "method": press.spec,
        "ratio": ratio,
        "keep": keep,
        "keep_tokens": keep_tokens,
        "mode": "query-aware" if query_aware else "query-agnostic",
        "context_tokens": len(head),
        "question_tokens": len(tail),
        "bits": getattr(press, "bits", None),  # the low precision of a packing method (None: nothing packed)
        "cache_bytes_before": stats.bytes_before,
        "cache_bytes_after": stats.bytes_after,
        "kept_fraction": stats.kept_fraction,
        "prefill_seconds": compressed.prefill_seconds,
        "prefill_chunk": prefill_chunk or None,
        "bounded": bounded,
        "peak_cache_bytes": compressed.peak_cache_bytes,
        "scoring_seconds": stats.scoring_seconds,
        "repeat_pass_dtype": None if pass_precision is None else str(pass_precision).removeprefix("torch."),
        "decode_seconds_per_token": result.decode_seconds_per_token,
        "tokens_kept_per_layer_head": {r.layer: r.kept[0] for r in stats.layers},
    }
    if as_json:
        print(json.dumps(report, ensure_ascii=False))
        return
    out.print(f"[bold]answer:[/bold] {answer_text}", highlight=False, markup=False)
    table = Table(title=f"{press.spec} · {report['mode']}")
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


def _bench_options(
    length: Annotated[int, typer.Option(help="Context tokens for niah and fidelity.")] = 1024,
    modes: Annotated[str, typer.Option(help="query-agnostic, query-aware or both.")] = "query-agnostic,query-aware",
    fidelity_samples: Annotated[int | None, typer.Option(help="Samples for fidelity (default --samples).")] = None,
    speed_tokens: Annotated[
        int, typer.Option(help="Tokens decoded per decode-speed cell at 2k context (0: skip).")
    ] = 16,
    budget: Annotated[
        str,
        typer.Option(
            help="What --ratios remove: tokens (of the context's cache) or bytes (of the full cache's bytes, so "
            "eviction, low-precision storage and merging meet at equal memory)."
        ),
    ] = "tokens",
    bits: Annotated[int | None, typer.Option(help="Low precision (2, 4, 8) of the packing methods.")] = None,
    option: options.Option = None,
) -> dict[str, Any]:
    """KV benchmark: tasks (niah, niah_multikey, niah_multivalue, kv_retrieval, nq_qa, fidelity) x methods x
    ratios in both modes, plus decode speed; resumable rows, summary CSV, plots, report."""
    from tokensift.inputs import parse_list, parse_options

    chosen = parse_list(modes, option="modes") or ()
    return {
        "length": length,
        "modes": chosen,
        "fidelity_samples": fidelity_samples,
        "speed_tokens": speed_tokens,
        "budget": budget,
        "bits": bits,
        "options": parse_options(option),
    }


def _benchmark() -> Any:
    from tokensift.kv.bench import KVBenchmark

    return KVBenchmark


bench = bench_cli.command("kv", _benchmark, _bench_options, out=Path("benchmarks/out/kv"))
