"""Long contexts (4k-32k tokens): prefill reduction, bounded chunked prefill and sparse decoding, one model.

    .venv/bin/python benchmarks/kv_long.py grid --model gemma3-270m --lengths 4096,8192,16384 --samples 3 \
        --out benchmarks/out/kv-long
    .venv/bin/python benchmarks/kv_long.py memory --model gemma3-270m --length 32768 --out benchmarks/out/kv-long
    .venv/bin/python benchmarks/kv_long.py report --out benchmarks/out/kv-long

``grid``: per sample of the passkey task (Landmark Attention's probe; the question kept in the prefill, so the
filters see it) one uncompressed prefill in chunks serves the full cache and every decoding policy (answers
read from copies of its cache); each prefill filter and the bounded chunked prefill run their own prefill.
Every row: answer correct, prefill seconds, decode ms per token, cache bytes, peak cache bytes. ``memory``:
peak RSS of ``tokensift kv generate`` runs in child processes (one configuration each: a one-pass prefill,
a chunked one, a bounded chunked one), so no run inherits another's peak. ``report`` writes the long-context
section of RESULTS-kv.md (between its ``long`` markers) and the plots of time and memory against length.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from sections import read_rows, replace_section  # noqa: E402 - a sibling module of this script

RESULTS = HERE / "RESULTS-kv.md"
PLOTS = HERE / "RESULTS-kv-long"
MARKERS = ("<!-- long:start -->", "<!-- long:end -->")
CHUNK = 2048


def grid(args: argparse.Namespace) -> None:
    """Quality, prefill and decode time per (length, method) on ``--task``, rows appended to rows.jsonl."""
    import torch

    from tokensift.bench.data import require_data_dir
    from tokensift.inputs import parse_options
    from tokensift.kv.api import press_from
    from tokensift.kv.qa import compress_context
    from tokensift.kv.tasks import build
    from tokensift.models import load_model
    from tokensift.report.progress import progress_bar

    torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    model, tokenizer = loaded.model, loaded.tokenizer
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.jsonl"
    folder = require_data_dir()
    done = {(r["model"], r["length"], r["sample"], r["method"]) for r in read_rows(rows_path) if r["task"] == args.task}
    filters = [m for m in args.filters.split(",") if m]
    decoders = [m for m in args.decoders.split(",") if m]
    bounded = [m for m in args.bounded.split(",") if m]
    presses = [m for m in args.presses.split(",") if m]
    press_options = parse_options([o for o in args.press_option if o])
    with progress_bar(transient=False) as bar:
        lengths = [int(x) for x in args.lengths.split(",")]
        task = bar.add_task("long-context grid", total=len(lengths) * args.samples)
        for length in lengths:
            for index in range(args.samples):
                sample = build(args.task, folder, tokenizer, index, args.seed, length)
                cell = Cell(loaded, sample, index, length, args, rows_path)
                key = (loaded.name, length, index)
                if any((*key, m) not in done for m in ["full", *decoders]):
                    full = compress_context(model, cell.ids, press_from("knorm", ratio=0.0), chunk_size=CHUNK)
                    cell.ask(full)  # warm-up: the first decoding steps after a long prefill run slow
                    if (*key, "full") not in done:
                        cell.row("full", 0.0, full, cell.ask(full))
                    for method in decoders:
                        if (*key, method) not in done:
                            cell.row(method, args.ratio, full, cell.ask(full, press_from(method, ratio=args.ratio)))
                for method in filters:
                    if (*key, method) not in done:
                        press = press_from(method, ratio=args.ratio)
                        context = compress_context(model, cell.ids, press, chunk_size=CHUNK)
                        cell.row(method, args.ratio, context, cell.ask(context), select_layer=press.layer_for(model))
                for method in bounded:
                    if (*key, f"bounded:{method}") not in done:
                        press = press_from(method, ratio=args.ratio)
                        context = compress_context(model, cell.ids, press, chunk_size=CHUNK, bounded=True)
                        cell.row(f"bounded:{method}", args.ratio, context, cell.ask(context))
                if any((*key, f"agnostic:{m}") not in done for m in presses):
                    blind = Cell(loaded, sample, index, length, args, rows_path, query_aware=False)
                    for method in presses:
                        if (*key, f"agnostic:{method}") not in done:
                            press = press_from(method, ratio=args.ratio, tokenizer=tokenizer, **press_options)
                            context = compress_context(model, blind.ids, press, chunk_size=CHUNK)
                            blind.row(f"agnostic:{method}", args.ratio, context, blind.ask(context))
                bar.advance(task)


class Cell:
    """One passkey sample at one length: its prompt split (the question inside the prefill, or with ``query_aware``
    False after it) and how rows are written."""

    def __init__(
        self,
        loaded: Any,
        sample: Any,
        index: int,
        length: int,
        args: argparse.Namespace,
        path: Path,
        query_aware: bool = True,
    ) -> None:
        import torch

        from tokensift.kv.tasks import split_prompt

        self.loaded, self.sample, self.index, self.length, self.args, self.path = (
            loaded, sample, index, length, args, path
        )  # fmt: skip
        head, tail = split_prompt(loaded.tokenizer, sample, query_aware)
        self.tokens = len(head)
        self.ids, self.question = torch.tensor([head]), torch.tensor([tail])

    def ask(self, context: Any, decode: Any = None) -> Any:
        """The greedy answer read from ``context`` (``decode``: a decoding policy)."""
        from tokensift.kv.qa import answer

        stop = {self.loaded.tokenizer.eos_token_id}
        model, tokens = self.loaded.model, self.args.new_tokens
        return answer(model, context, self.question, max_new_tokens=tokens, stop_ids=stop, decode=decode)

    def row(self, method: str, ratio: float, context: Any, ans: Any, **extra: Any) -> None:
        """Append one row: the answer, whether it holds the key, times and cache bytes."""
        from tokensift.kv.cache import cache_bytes
        from tokensift.kv.tasks import string_match

        text = self.loaded.tokenizer.decode(ans.ids[0], skip_special_tokens=True)
        record = {
            "model": self.loaded.name,
            "task": self.sample.task,
            "length": self.length,
            "tokens": self.tokens,
            "sample": self.index,
            "method": method,
            "ratio": ratio,
            "answer": text,
            "correct": string_match(text, self.sample)[0],
            "prefill_s": context.prefill_seconds,
            "decode_ms": ans.decode_seconds_per_token * 1000,
            "cache_bytes": cache_bytes(context.cache),  # every layer, sliding windows included
            "compressed_bytes_full": context.stats.bytes_before if context.stats.layers else None,
            "peak_cache_bytes": context.peak_cache_bytes,
            **extra,
        }
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def memory(args: argparse.Namespace) -> None:
    """Peak RSS of one ``tokensift kv generate`` per configuration, each in a fresh child process."""
    from tokensift.kv.tasks import passkey
    from tokensift.models import load_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = load_model(args.model).tokenizer
    sample = passkey(tokenizer, 0, args.seed, args.length)
    context = out / f"passkey-{args.length}.txt"
    context.write_text(sample.context, encoding="utf-8")
    configs = {
        "one pass, full cache": ["--method", "knorm", "--ratio", "0", "--prefill-chunk", "0"],
        f"chunks of {CHUNK}, full cache": ["--method", "knorm", "--ratio", "0"],
        f"chunks of {CHUNK}, bounded snapkv 90 %": ["--method", "snapkv", "--ratio", "0.9", "--bounded"],
        f"chunks of {CHUNK}, gemfilter 90 %": ["--method", "gemfilter", "--ratio", "0.9", "--query-aware"],
    }
    wanted = [c for c in configs if args.only in c]  # a part of a configuration's name ("" = all of them)
    for name in wanted:
        command = [
            sys.executable, "-c", PEAK_WRAPPER, "kv", "generate", "--model", args.model, "--context", str(context),
            "-q", sample.question, "--max-new-tokens", "8", "--json", *configs[name],
        ]  # fmt: skip
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
        started = time.perf_counter()
        child = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        found = re.findall(r"PEAK_RSS_KB=(\d+)", child.stderr)
        peak = int(found[-1]) / 1024 if found else float("nan")
        status, stdout, stderr = child.returncode, child.stdout, child.stderr
        report = json.loads(stdout.strip().splitlines()[-1]) if status == 0 and stdout.strip() else {}
        record = {
            "model": args.model,
            "length": args.length,
            "config": name,
            "rc": status,
            "peak_rss_mb": peak,
            "wall_s": time.perf_counter() - started,
            "prefill_s": report.get("prefill_seconds"),
            "peak_cache_bytes": report.get("peak_cache_bytes"),
            "answer": report.get("answer"),
            "correct": sample.answers[0] in str(report.get("answer", "")),
            "error": None if status == 0 else (stderr.strip().splitlines() or [f"exit {status}"])[-1],
        }
        print(json.dumps(record), flush=True)
        with (out / "memory.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


PEAK_WRAPPER = """
import resource, runpy, sys
sys.argv = ["tokensift", *sys.argv[1:]]
try:
    runpy.run_module("tokensift", run_name="__main__")
finally:
    print(f"PEAK_RSS_KB={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}", file=sys.stderr)
"""
"""Runs the CLI in the child and prints the child's own peak resident memory (Linux: KiB) on its way out."""


def report(args: argparse.Namespace) -> None:
    """The long-context section of RESULTS-kv.md and its plots, from the rows of ``grid`` and ``memory``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    rows = read_rows(out / "rows.jsonl")
    grouped: dict[tuple[str, int, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        grouped[(f"{r['model']} · {r['task']}", r["length"], r["method"])].append(r)
    lines = [
        MARKERS[0],
        "## Long contexts (4k-32k tokens)",
        "",
        f"`python benchmarks/kv_long.py grid --model MODEL --lengths ... --samples N` ({CHUNK}-token prefill chunks, "
        "2 CPU threads, fp32, question inside the prefill). Prefill = seconds to the cache the answer is read from "
        "(a filter's two passes included); decode = median ms per generated token; speed-up = full / method; cache "
        "= bytes of every layer after the prefill (Gemma-3's sliding windows included), peak cache = the most the "
        "compressed layers held during the prefill; `ratio` 0.9 for every method "
        "(filters: 90 % of the context never reaches the later layers; decoding policies: each step attends 10 % "
        "of the cache; bounded: the cache is cut to 10 % after every chunk). Medians over the samples.",
        "",
        "Cache MiB is storage as allocated: the rows measured before `kv.cache.compact` (865610f) still held the "
        "last 2,048-token chunk behind each of Gemma-3's 511-token sliding windows (transformers keeps the window "
        "as a view of the whole update), so full-cache rows show 40-70 MiB more than they need now. The timed rows "
        "ran before the fused chunk attention (154d8e8), so chunked prefill times are those of the masked call.",
        "",
        "| model · task | tokens | method | correct | prefill s | speed-up | decode ms | speed-up | cache MiB "
        "| peak cache MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, length in sorted({(m, n) for m, n, _ in grouped}):
        full = grouped.get((model, length, "full"), [])
        base_prefill = statistics.median(r["prefill_s"] for r in full) if full else None
        base_decode = statistics.median(r["decode_ms"] for r in full) if full else None
        methods = sorted({m for mm, n, m in grouped if (mm, n) == (model, length)}, key=lambda m: (m != "full", m))
        for method in methods:
            group = grouped[(model, length, method)]
            prefill = statistics.median(r["prefill_s"] for r in group)
            decode = statistics.median(r["decode_ms"] for r in group)
            cache = [r["cache_bytes"] for r in group if r.get("cache_bytes")]
            peak = [r["peak_cache_bytes"] for r in group if r.get("peak_cache_bytes")]
            lines.append(
                f"| {model} | {statistics.median(r['tokens'] for r in group):.0f} | {method} | "
                f"{sum(r['correct'] for r in group)}/{len(group)} | {prefill:.1f} | "
                f"{base_prefill / prefill if base_prefill else float('nan'):.2f}× | {decode:.0f} | "
                f"{base_decode / decode if base_decode else float('nan'):.2f}× | "
                f"{statistics.median(cache) / 2**20 if cache else float('nan'):.1f} | "
                f"{statistics.median(peak) / 2**20 if peak else float('nan'):.1f} |"
            )
    memory_rows = read_rows(out / "memory.jsonl")
    if memory_rows:
        lines += [
            "",
            "Peak resident memory of one `tokensift kv generate` run per configuration (a fresh child process each, "
            "the model's weights included; `python benchmarks/kv_long.py memory --length N --only CONFIG`; times "
            "are in the table above, these runs shared the machine):",
            "",
            "| model | tokens | configuration | peak RSS MiB | peak cache MiB | answer (8 tokens, the key cut short) |",
            "|---|---|---|---|---|---|",
        ]
        for r in memory_rows:
            peak_cache = f"{r['peak_cache_bytes'] / 2**20:.1f}" if r.get("peak_cache_bytes") else "-"
            outcome = repr(r["answer"]) if r.get("rc") == 0 else f"failed: {r.get('error')}"
            lines.append(
                f"| {r['model']} | {r['length']} | {r['config']} | {r['peak_rss_mb']:.0f} | {peak_cache} | {outcome} |"
            )
    PLOTS.mkdir(exist_ok=True)
    for model in sorted({m for m, _, _ in grouped}):
        figure, axes = plt.subplots(1, 3, figsize=(15, 4))
        for method in sorted({m for mm, _, m in grouped if mm == model}):
            points = sorted((n, grouped[(model, n, method)]) for mm, n, m in grouped if (mm, m) == (model, method))
            xs = [n for n, _ in points]
            for axis, field, scale in zip(
                axes, ("prefill_s", "decode_ms", "peak_cache_bytes"), (1.0, 1.0, 2**-20), strict=True
            ):
                values = [statistics.median(float(r[field] or 0) for r in g) * scale for _, g in points]
                axis.plot(xs, values, marker="o", label=method)
        axes[0].set(xlabel="context tokens", ylabel="prefill s", title=f"{model}: prefill", xscale="log")
        axes[1].set(xlabel="context tokens", ylabel="ms per token", title=f"{model}: decode", xscale="log")
        axes[2].set(xlabel="context tokens", ylabel="MiB", title=f"{model}: peak cache in the prefill", xscale="log")
        axes[0].legend(fontsize=7)
        figure.tight_layout()
        name = "time-" + re.sub(r"[^A-Za-z0-9.-]+", "-", model) + ".png"
        figure.savefig(PLOTS / name, dpi=110)
        plt.close(figure)
        lines += ["", f"![prefill, decode and cache against context length, {model}](RESULTS-kv-long/{name})"]
    lines.append(MARKERS[1])
    section = "\n".join(lines)
    replace_section(RESULTS, MARKERS, section)
    print(section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    g = commands.add_parser("grid")
    g.add_argument("--model", default="gemma3-270m")
    g.add_argument("--task", default="passkey", help="passkey, or niah (the essays) for a model passkey defeats")
    g.add_argument("--lengths", default="4096,8192,16384")
    g.add_argument("--samples", type=int, default=3)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--ratio", type=float, default=0.9)
    g.add_argument("--filters", default="gemfilter,promptdistill")
    g.add_argument("--decoders", default="tokenselect,tidaldecode")
    g.add_argument("--bounded", default="snapkv")
    g.add_argument(
        "--presses", default="", help="cache presses run query-agnostically (the question after the compression)"
    )
    g.add_argument("--press-option", action="append", default=[], help="KEY=VALUE for the presses (repeatable)")
    g.add_argument("--new-tokens", type=int, default=8)
    g.add_argument("--threads", type=int, default=2)
    g.add_argument("--out", default="benchmarks/out/kv-long")
    m = commands.add_parser("memory")
    m.add_argument("--model", default="gemma3-270m")
    m.add_argument("--length", type=int, default=32000)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--only", default="")
    m.add_argument("--threads", type=int, default=2)
    m.add_argument("--out", default="benchmarks/out/kv-long")
    r = commands.add_parser("report")
    r.add_argument("--out", default="benchmarks/out/kv-long")
    args = parser.parse_args()
    {"grid": grid, "memory": memory, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
