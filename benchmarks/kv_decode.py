"""Decode time per token with compressed caches beside the full cache, batch 1, the variants taking turns.

    .venv/bin/python benchmarks/kv_decode.py --methods quant2:kvzap,kvzap,mikv --length 2048 --budget bytes

One prefill of an essay needle at ``--length`` tokens; every method compresses a fresh copy of it (at ``--ratio``
of the cache's bytes or tokens removed) and answers the question greedily for ``--tokens`` tokens; the full cache
(transformers' ``DynamicCache``) does the same. ``--repeats`` rounds, in each of which every variant decodes once,
so a load change on the machine hits all of them alike; the medians are printed (and their ratio to the full
cache's), ``--json`` for one object. ``--compare-step``: every packed cache also decodes with its one-query steps
through the scale-folded products (``attend_packed`` / ``attend_flat``, the path before the dequantize-into-a-buffer
step), as ``NAME/products``, in the same rounds. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
from collections.abc import Callable
from pathlib import Path

import torch

from tokensift.kv.bench import Variant
from tokensift.kv.lowbits import QuantizedLayer, attend_flat, attend_packed

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main() -> None:
    from tokensift.inputs import parse_options
    from tokensift.kv.attach import CompressionStats
    from tokensift.kv.bench import prefill, ragged_context, reads_hidden, row_bytes, variants
    from tokensift.kv.qa import CompressedContext, answer
    from tokensift.kv.tasks import build, split_prompt
    from tokensift.models import load_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--methods", default="quant2:kvzap,kvzap")
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--ratio", type=float, default=0.75)
    parser.add_argument("--budget", choices=("bytes", "tokens"), default="bytes")
    parser.add_argument("--tokens", type=int, default=24, help="tokens decoded per run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--option", action="append", help="KEY=VALUE for every method that accepts it (full=0.5)")
    parser.add_argument("--compare-step", action="store_true", help="also time the products path per packed cache")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    methods = [m for m in args.methods.split(",") if m]
    model, tokenizer = load_model(args.model)
    sample = build("niah", args.data, tokenizer, 0, args.seed, args.length)
    head, tail = split_prompt(tokenizer, sample, False)
    pre = prefill(model, head, hidden=reads_hidden(methods, tokenizer))
    question = torch.tensor([tail])

    def full_cache() -> CompressedContext:
        return CompressedContext(pre.cache, pre.length, CompressionStats(), pre.seconds, pre.logits)

    makers: dict[str, Callable[[], CompressedContext]] = {"full": full_cache}
    options = parse_options(args.option)
    chosen = variants(
        pre,
        methods,
        [args.ratio],
        lambda m, r: True,
        model=model,
        tokenizer=tokenizer,
        options=options,
        budget=args.budget,
    )
    for v in chosen:
        makers[v.method] = functools.partial(ragged_context, pre, v)
        if args.compare_step and packs(v):
            makers[f"{v.method}/products"] = functools.partial(ragged_context, pre, v)
    ms: dict[str, list[float]] = {name: [] for name in makers}
    nbytes: dict[str, int] = {}
    step = QuantizedLayer._attend_step
    for _ in range(args.repeats):
        for name, make in makers.items():
            context = make()  # one compressed cache alive at a time
            nbytes[name] = row_bytes(context, 0)
            setattr(QuantizedLayer, "_attend_step", products_step if name.endswith("/products") else step)  # noqa: B010
            ms[name].append(answer(model, context, question, max_new_tokens=args.tokens).decode_seconds_per_token * 1e3)
    setattr(QuantizedLayer, "_attend_step", step)  # noqa: B010
    full = statistics.median(ms["full"])
    result = {
        "model": args.model,
        "context_tokens": len(head),
        "budget": args.budget,
        "ratio": args.ratio,
        "options": options,
        "threads": args.threads,
        "tokens": args.tokens,
        "repeats": args.repeats,
        "decode_ms_per_token": {name: statistics.median(v) for name, v in ms.items()},
        "runs_ms": ms,
        "slowdown_vs_full": {name: statistics.median(v) / full for name, v in ms.items()},
        "cache_bytes_fraction": {name: nbytes[name] / nbytes["full"] for name in makers},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.model}, {len(head)} context tokens, batch 1, {args.threads} threads, medians of {args.repeats}")
    for name in makers:
        slower, share = result["slowdown_vs_full"][name], result["cache_bytes_fraction"][name]
        each = result["decode_ms_per_token"][name]
        print(f"{name:>16}: {each:6.1f} ms/token ({slower:.2f}x full; cache {share:.3f})")


def packs(variant: Variant) -> bool:
    """Whether the variant's cache stores tokens at low precision (its layers are :class:`QuantizedLayer`)."""
    return any(isinstance(layer, QuantizedLayer) for layer in (variant.built or {}).values())


def products_step(layer: QuantizedLayer, query: torch.Tensor, scaling: float) -> torch.Tensor:
    """A one-query step through the scale-folded products (the multi-query path), for ``--compare-step``."""
    if isinstance(layer.low, tuple) and layer.segments_k is None:
        return attend_packed(query, scaling, layer.low, layer.keys, layer.values)  # [B, 1, H, D]
    if layer.segments_k is None:
        layer._split_dense()
    assert layer.flat is not None and layer.segments_k is not None and layer.segments_v is not None
    rows = zip(layer.flat, layer.segments_k, layer.segments_v, strict=True)
    outs = [attend_flat(query[b], scaling, flat, keys, values) for b, (flat, keys, values) in enumerate(rows)]
    return torch.stack(outs).transpose(1, 2)


if __name__ == "__main__":
    main()
