"""``tokensift vision`` (ask a VLM about an image, with its visual tokens pruned) and ``tokensift bench vision``.

Cheap to import (the CLI loads it at start-up); models, torch and transformers load inside commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from tokensift import options
from tokensift.bench import cli as bench_cli
from tokensift.errors import ParameterError
from tokensift.inputs import parse_options

out = Console()
err = Console(stderr=True)

VLM = "llava-smol"


def vision(
    image: Annotated[Path, typer.Argument(help="Image file (PNG, JPEG, …).")],
    question: Annotated[str, typer.Option("--question", "-q", help="The question about the image.")],
    method: Annotated[
        str | None, typer.Option(help="Visual-token method (see `tokensift methods --target vision`); none: all kept.")
    ] = None,
    keep: Annotated[float | None, typer.Option(help="Share of the visual tokens kept, in (0, 1].")] = None,
    keep_tokens: options.KeepTokens = None,
    option: options.Option = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Embedded VLM name or local LLaVA folder.")] = VLM,
    max_new_tokens: Annotated[int, typer.Option(min=1, max=256, help="Longest answer, in tokens.")] = 16,
    html: Annotated[Path | None, typer.Option(help="Write a page showing kept / merged / pruned patches.")] = None,
    warmup: Annotated[
        int,
        typer.Option(
            min=0,
            max=10,
            help="Answer this many times first, untimed, so the reported times are a warm model's (as `tokensift "
            "bench vision` times them); a fresh process's first forward also pays one-time setup.",
        ),
    ] = 0,
    as_json: options.Json = False,
    cache_dir: options.CacheDir = None,
) -> None:
    """Answer a question about an image with the VLM, seeing only the visual tokens the method keeps."""
    from tokensift.methods import build
    from tokensift.models import load_model
    from tokensift.vision.images import load_image, overlay_html
    from tokensift.vision.pipeline import budget
    from tokensift.vision.qa import answer

    if not question.strip():
        raise ParameterError("--question is empty", option="question")
    if method is None and (keep is not None or keep_tokens is not None or option):
        raise ParameterError("--keep, --keep-tokens and --option need a --method", option="method")
    chosen = build("vision", method, **parse_options(option)) if method is not None else None
    if chosen is not None and keep is None and keep_tokens is None:
        keep = 0.25
    budget(1 << 30, keep, keep_tokens)  # the budget's values are checked before anything loads
    picture = load_image(image)
    if html is not None and html.is_dir():
        raise ParameterError(f"--html {html} is a directory; give a file name", option="html")
    with err.status(f"loading {model} …"):
        loaded = load_model(model, cache_dir=cache_dir)
    if loaded.processor is None or not hasattr(loaded.processor, "tokenizer"):
        raise ParameterError(f"{loaded.name} is not a vision-language model", option="model")
    for _ in range(warmup):
        answer(loaded.model, loaded.processor, [picture], [question], chosen, keep=keep, keep_tokens=keep_tokens)
    result = answer(
        loaded.model,
        loaded.processor,
        [picture],
        [question],
        chosen,
        keep=keep,
        keep_tokens=keep_tokens,
        max_new_tokens=max_new_tokens,
    )
    prepared = result.prepared
    n = prepared.visual_tokens
    kept = prepared.kept[0]
    facts = {
        "model": loaded.name,
        "question": question,
        "answer": result.answers[0],
        "method": method,
        "visual_tokens": n,
        "visual_tokens_kept": kept,
        "kept_share": round(kept / n, 4),
        "merged_tokens": int((prepared.status[0] == 1).sum()),
        "prefill_seconds": round(result.prefill_seconds, 4),
        "decode_seconds_per_token": round(result.decode_seconds_per_token, 4),
        "new_tokens": result.new_tokens,
        "warmup": warmup,
    }
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(overlay_html(picture, prepared.status[0], prepared.grid, facts), encoding="utf-8")
        err.print(f"wrote {html}")
    if as_json:
        print(json.dumps(facts, indent=2))
        return
    out.print(f"[bold]{result.answers[0]}[/bold]")
    err.print(
        f"[dim]{kept}/{n} visual tokens ({method or 'all kept'}), prefill {result.prefill_seconds:.2f} s, "
        f"decode {1000 * result.decode_seconds_per_token:.0f} ms/token[/dim]"
    )


def _bench_options(
    vit_methods: Annotated[
        str | None, typer.Option(help="Encoder methods for the ViT tasks (default: every registered one).")
    ] = None,
    vit_ratios: Annotated[str, typer.Option(help="Shares of the ViT's tokens removed.")] = "0.25,0.5",
    vit_size: Annotated[int, typer.Option(help="Image side for the ViT tasks, in pixels.")] = 224,
    probe_train: Annotated[int, typer.Option(help="easy-VQA train images the linear probe learns from.")] = 1000,
    probe_test: Annotated[int, typer.Option(help="easy-VQA test images the probe (and [CLS] cosine) use.")] = 500,
    speed_images: Annotated[int, typer.Option(help="Questions timed at batch 1.")] = 16,
    batch_size: Annotated[int, typer.Option(help="Questions per batch for easy-VQA accuracy.")] = 16,
    threads: Annotated[int, typer.Option(help="torch threads (the speed figures are for this many cores).")] = 2,
) -> dict[str, Any]:
    """VLM visual-token pruning (easy-VQA accuracy and prefill time against the share of visual tokens kept) and
    DINOv2 token reduction ([CLS] fidelity, linear probe, images/s); resumable rows, summary CSV, plots, report."""
    from tokensift.inputs import parse_list

    return {
        "vit_methods": parse_list(vit_methods, option="vit_methods"),
        "vit_ratios": parse_list(vit_ratios, float, option="vit_ratios") or (),
        "vit_size": vit_size,
        "probe_train": probe_train,
        "probe_test": probe_test,
        "speed_images": speed_images,
        "batch_size": batch_size,
        "threads": threads,
    }


def _benchmark() -> Any:
    from tokensift.vision.bench import VisionBenchmark

    return VisionBenchmark


bench = bench_cli.command("vision", _benchmark, _bench_options, out=Path("benchmarks/out/vision"))
