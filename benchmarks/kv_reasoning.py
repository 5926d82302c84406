"""Decoding-time eviction on long generations: GSM8K chain-of-thought with a bounded KV cache.

    .venv/bin/python benchmarks/kv_reasoning.py run --samples 30 --caches 128,256 --out benchmarks/out/kv-reasoning
    .venv/bin/python benchmarks/kv_reasoning.py report --out benchmarks/out/kv-reasoning

The reasoning trace is the long part, so the cache bound bites while generating, not after a prefill. Each
GSM8K test question is asked zero-shot through the model's chat template ("think step by step, then the final
number after ####"); the rows of one batch generate together (left padding), greedy, ``--new-tokens`` at most.
Every online KV method (read from the registry: ``h2o``, ``tova``, ``a2sf``, ``lazyeviction`` …) runs under
``kv.bounded`` at each ``--caches`` size, beside the uncompressed cache. Per row: the final number correct,
how many of the full cache's generated tokens the bounded run reproduced before diverging (trace agreement —
informative even when a 135M model rarely gets the number right), tokens generated, seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from sections import read_rows, replace_section  # noqa: E402 - a sibling module of this script

RESULTS = HERE / "RESULTS-kv.md"
MARKERS = ("<!-- reasoning:start -->", "<!-- reasoning:end -->")
INSTRUCTION = "Solve the problem step by step, then write the final number after ####."
NEXT_QUESTION = "\nQuestion:"
"""A base model goes on with a question of its own after its answer: the text is cut there."""


def prompt_text(tokenizer: Any, question: str) -> str:
    """Zero-shot: the chat template with :data:`INSTRUCTION` where the model has one; for a base model (no
    template) chain-of-thought-hub's plain format, ``Question: ...`` then ``Let's think step by step``."""
    if getattr(tokenizer, "chat_template", None):
        return str(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": f"{question}\n\n{INSTRUCTION}"}],
                tokenize=False,
                add_generation_prompt=True,
            )
        )
    return f"Question: {question}\nLet's think step by step\n"


def run(args: argparse.Namespace) -> None:
    """Generate every sample under every (method, cache size) and the full cache; rows to rows.jsonl."""
    import torch

    from tokensift.bench.data import gsm8k, require_data_dir
    from tokensift.kv.decode import bounded, online_methods
    from tokensift.models import load_model
    from tokensift.report.progress import progress_bar
    from tokensift.training.finetuning import final_number

    torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    model, tokenizer = loaded.model, loaded.tokenizer
    problems = gsm8k(require_data_dir(), "test")[: args.samples]
    methods = [m for m in (args.methods.split(",") if args.methods else online_methods()) if m]
    caches = [int(c) for c in args.caches.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "rows.jsonl"
    existing = read_rows(path)
    done = {(r["method"], r["cache"], r["index"]) for r in existing}
    tokenizer.padding_side = "left"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    configs = [("full", 0), *[(m, c) for c in caches for m in methods]]
    batches = [list(range(i, min(len(problems), i + args.batch))) for i in range(0, len(problems), args.batch)]
    full_ids: dict[int, list[int]] = {r["index"]: r["ids"] for r in existing if r["method"] == "full"}
    with progress_bar(transient=False) as bar:
        task = bar.add_task("GSM8K generations", total=len(configs) * len(batches))
        for method, cache in configs:
            for batch in batches:
                todo = [i for i in batch if (method, cache, i) not in done]
                if not todo:
                    bar.advance(task)
                    continue
                prompts = [prompt_text(tokenizer, problems[i]["question"]) for i in todo]
                inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
                kwargs = dict(max_new_tokens=args.new_tokens, do_sample=False, pad_token_id=pad)
                started = time.perf_counter()
                with torch.no_grad():
                    if method == "full":
                        generated = model.generate(**inputs, **kwargs)
                    else:
                        with bounded(model, method, max_cache_tokens=cache, every=args.every):
                            generated = model.generate(**inputs, **kwargs)
                seconds = time.perf_counter() - started
                for row, i in enumerate(todo):
                    ids = generated[row, inputs.input_ids.shape[1] :].tolist()
                    ids = ids[: ids.index(pad)] if pad in ids else ids
                    text = tokenizer.decode(ids, skip_special_tokens=True).split(NEXT_QUESTION)[0]
                    gold = final_number(problems[i]["answer"])
                    if method == "full":
                        full_ids[i] = ids
                    reference = full_ids.get(i, [])
                    agree = next((k for k, (a, b) in enumerate(zip(ids, reference, strict=False)) if a != b), None)
                    agree = min(len(ids), len(reference)) if agree is None else agree
                    record = {
                        "model": loaded.name,
                        "method": method,
                        "cache": cache,
                        "index": i,
                        "prompt_tokens": int(inputs.attention_mask[row].sum()),
                        "generated": len(ids),
                        "correct": final_number(text) == gold,
                        "agreement": agree / max(1, len(reference)),
                        "seconds": seconds / len(todo),
                        "answer": text[-200:],
                        "ids": ids if method == "full" else None,
                    }
                    with path.open("a", encoding="utf-8") as handle:
                        handle.write(json.dumps(record) + "\n")
                bar.advance(task)


def report(args: argparse.Namespace) -> None:
    """The decoding-time eviction section of RESULTS-kv.md."""
    rows = read_rows(Path(args.out) / "rows.jsonl")
    grouped: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        grouped[(r["method"], r["cache"])].append(r)
    full = grouped.get(("full", 0), [])
    lines = [
        MARKERS[0],
        "## Decoding-time eviction on long generations (GSM8K chain of thought)",
        "",
        "`python benchmarks/kv_reasoning.py run` (zero-shot chat prompt, or `Question: ...` for a base model; greedy, "
        "batches of left-padded questions, "
        "`kv.bounded(model, METHOD, max_cache_tokens=C, every=16)`). Correct = the final number; agreement = share "
        "of the full cache's generated tokens reproduced before the first divergence (mean); generated = median "
        "tokens; the prompt plus the trace is what the bound has to hold.",
        "",
        f"Model {rows[0]['model'] if rows else '-'}; prompt tokens median "
        f"{statistics.median(r['prompt_tokens'] for r in full) if full else 0:.0f}, full-cache trace median "
        f"{statistics.median(r['generated'] for r in full) if full else 0:.0f} tokens.",
        "",
        "| method | cache tokens | correct | agreement | generated | s per question |",
        "|---|---|---|---|---|---|",
    ]
    for (method, cache), group in sorted(grouped.items(), key=lambda kv: (kv[0][1], kv[0][0] != "full", kv[0][0])):
        lines.append(
            f"| {method} | {cache or 'all'} | {sum(r['correct'] for r in group)}/{len(group)} | "
            f"{statistics.fmean(r['agreement'] for r in group):.2f} | "
            f"{statistics.median(r['generated'] for r in group):.0f} | "
            f"{statistics.median(r['seconds'] for r in group):.1f} |"
        )
    lines.append(MARKERS[1])
    section = "\n".join(lines)
    replace_section(RESULTS, MARKERS, section)
    print(section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    r = commands.add_parser("run")
    r.add_argument("--model", default="smollm2-135m")
    r.add_argument("--samples", type=int, default=30)
    r.add_argument("--caches", default="128,256")
    r.add_argument("--methods", default="", help="comma-separated (default: every online KV method)")
    r.add_argument("--new-tokens", type=int, default=320)
    r.add_argument("--every", type=int, default=16)
    r.add_argument("--batch", type=int, default=10)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--out", default="benchmarks/out/kv-reasoning")
    p = commands.add_parser("report")
    p.add_argument("--out", default="benchmarks/out/kv-reasoning")
    args = parser.parse_args()
    {"run": run, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
