"""The equal-bytes KV tables: the top section of benchmarks/RESULTS-kv.md, plots and summaries.

.venv/bin/python benchmarks/kv_bytes.py --run 1024=benchmarks/out/kv-bytes-1k --run 2048=benchmarks/out/kv-bytes-2k

Each run folder holds the rows of ``tokensift bench kv --budget bytes`` (and of the peers run on the same
instances: ``benchmarks/peers/hf_quantized.py``). The section between the ``bytes`` markers of RESULTS-kv.md is
rewritten: per context length, the best method per bytes budget and task beside the uncompressed cache and the
peers, the targets of the equal-bytes issue, then every method's row; quality-against-bytes plots go to
benchmarks/RESULTS-kv-bytes/.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS-kv.md"
FOLDER = HERE / "RESULTS-kv-bytes"
MARKERS = ("<!-- bytes:start -->", "<!-- bytes:end -->")
METRIC = {"niah": "correct", "niah_multikey": "correct", "nq_qa": "gold_logprob"}
BUDGETS = (0.875, 0.75, 0.5)
KVPRESS_KVZIP = {  # kvpress 0.5.5 KVzipPress, same seed-0 instances (first 20), 1,024 tokens; see "Full tables"
    ("niah", 0.875): (0.95, 20),
    ("niah", 0.75): (1.0, 20),
    ("niah_multikey", 0.875): (0.45, 20),
    ("niah_multikey", 0.75): (0.5, 20),
}
KVPRESS_FULL = {"niah": (1.0, 20), "niah_multikey": (0.55, 20)}


def rows_of(folder: Path) -> list[dict[str, Any]]:
    with (folder / "rows.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def cells(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str, float], dict[str, Any]]:
    """Per (system, task, method, ratio): mean quality, n, measured bytes, compression time / prefill."""
    grouped: dict[tuple[str, str, str, float], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[(row["system"], row["task"], row["method"], float(row["ratio"]))].append(row)
    out = {}
    for key, group in grouped.items():
        metric = METRIC[key[1]]
        values = [float(r[metric]) for r in group if r.get(metric) is not None]
        out[key] = {
            "quality": statistics.fmean(values) if values else None,
            "n": len(values),
            "bytes": statistics.fmean(float(r["kept_fraction"]) for r in group),
            "cost": statistics.median((r["prefill_s"] + r["scoring_s"]) / r["prefill_s"] for r in group),
            "token_ratio": statistics.fmean(float(r.get("token_ratio", r["ratio"])) for r in group),
        }
    return out


def fmt(value: float | None, task: str) -> str:
    """A cell's quality: a rate for the needle tasks, nats for ``nq_qa``'s gold log-probability."""
    return "–" if value is None else f"{value:.2f}"


def best(table: dict, task: str, ratio: float) -> tuple[str, dict[str, Any]] | None:
    found = [
        (k[2], c)
        for k, c in table.items()
        if k[0] == "tokensift" and k[1] == task and k[3] == ratio and k[2] != "full" and c["quality"] is not None
    ]
    if not found:
        return None
    top = max(c["quality"] for _, c in found)
    names = sorted(m for m, c in found if c["quality"] == top)
    return ", ".join(names), next(c for m, c in found if m == names[0])


def kvpress_cell(table: dict, task: str, ratio: float, length: int) -> str:
    """kvpress's KVzip on the same instances when the run has its rows, else the earlier run's figure (1k)."""
    ran, full = table.get(("kvpress", task, "kvzip", ratio)), table.get(("kvpress", task, "full", 0.0))
    if ran is not None:
        full_text = f"; full {fmt(full['quality'], task)}" if full else ""
        return f"{fmt(ran['quality'], task)} ({ran['n']}{full_text}, bytes {ran['bytes']:.3f})"
    quoted = KVPRESS_KVZIP.get((task, ratio)) if length == 1024 else None
    return f"{quoted[0]:.2f} ({quoted[1]}, earlier run; full {KVPRESS_FULL[task][0]:.2f})" if quoted else "–"


def section(runs: dict[int, list[dict[str, Any]]], extra: str = "", lead: str = "") -> list[str]:
    lines = [
        MARKERS[0],
        "## At equal bytes: eviction, low precision and merging at 12.5 / 25 % of the full cache's bytes",
        "",
        "Produced by `bash benchmarks/run-kv-bytes.sh` (then `benchmarks/kv_bytes.py` writes this section). "
        "`tokensift bench kv --budget bytes`: each `ratio` is the share of the full cache's **bytes** removed "
        "(0.875 → 12.5 % kept, 0.75 → 25 %); every method gets the token ratio that makes its real storage meet "
        "that (eviction and CaM: the kept tokens; `merge`/`ems`: kept tokens plus their log mass; `quant2:*`, "
        "`mikv`, `zipcache`: full-precision tokens plus the rest packed at 2 bits with fp16 scales and zero points, "
        "KIVI layout, group 32; `qprune:*`: the kept tokens all packed at 4 bits, the rest evicted). "
        "Query-agnostic (the question comes after compression), SmolLM2-135M-Instruct "
        "float32, seed 0, greedy, string match; `nq_qa` reports the gold answer's log-probability (nats). "
        "`bytes` = measured bytes of the stored cache ÷ the full cache's (what `--json` reports). `× prefill` = "
        "median over samples of (prefill + scoring) ÷ prefill, both timed in the same process (scoring includes "
        "KVzip's repeat pass and building packed or merged layers).",
        "",
        "Peers: transformers' own quantized cache (`QuantizedCache(backend='quanto')`, 2 and 4 bits, groups of 64, "
        "every context token quantized; `benchmarks/peers/hf_quantized.py`) on the same instances, placed in the "
        "smallest budget it fits under with its measured bytes; kvpress 0.5.5's KVzip on the same instances "
        "(`benchmarks/peers/kvpress/run.py --methods kvzip`: its own prefill, repeat passes and global "
        "selection; for eviction the kept tokens are the bytes). kvpress "
        "0.5.5 also ships KVzap and Fast KVzip presses, but they load trained scorers from the model hub and none "
        "exists for SmolLM2, so they are not run; its CaM and KVCompose presses need eager attention weights "
        "and were not run either.",
        "",
    ]
    if lead:
        lines += [lead.strip(), ""]
    for length, rows in sorted(runs.items()):
        table = cells(rows)
        tasks = [t for t in METRIC if any(k[1] == t for k in table)]
        lines += [f"### {length} tokens — best per bytes budget, beside the uncompressed cache and the peers", ""]
        lines += [
            "| task | bytes kept | full cache | best tokensift (mean, n) | its bytes | its × prefill | "
            "transformers quanto (same instances) | kvpress KVzip |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for task in tasks:
            full = table.get(("tokensift", task, "full", 0.0))
            for ratio in (0.875, 0.75):
                top = best(table, task, ratio)
                if top is None:
                    continue
                name, cell = top
                peers = [
                    f"{k[2]} {fmt(c['quality'], task)} ({c['n']}, bytes {c['bytes']:.3f})"
                    for k, c in sorted(table.items())
                    if k[0] == "transformers" and k[1] == task and k[3] == ratio
                ]
                press_cell = kvpress_cell(table, task, ratio, length)
                full_cell = f"{fmt(full['quality'], task)} ({full['n']})" if full else "–"
                lines.append(
                    f"| {task} | {1 - ratio:.1%} | {full_cell} "
                    f"| {name} {fmt(cell['quality'], task)} ({cell['n']}) | {cell['bytes']:.4f} | {cell['cost']:.2f}× "
                    f"| {'; '.join(peers) or '–'} | {press_cell} |"
                )
        lines += ["", *targets(length, table), ""]
        lines += [f"#### {length} tokens — every method", ""]
        header = (
            "| task | system | method | "
            + " | ".join(f"{1 - r:.1%} bytes: quality (n) · bytes · × prefill" for r in (0.875, 0.75))
            + " |"
        )
        lines += [header, "|---|---|---|---|---|"]
        for task in tasks:
            methods = sorted({(k[0], k[2]) for k in table if k[1] == task and k[2] != "full"})
            for system, method in methods:
                row = [f"| {task} | {system} | {method} |"]
                for ratio in (0.875, 0.75):
                    c = table.get((system, task, method, ratio))
                    row.append(
                        f" {fmt(c['quality'], task)} ({c['n']}) · {c['bytes']:.4f} · {c['cost']:.2f}× |"
                        if c
                        else " – |"
                    )
                lines.append("".join(row))
        lines += ["", f"![quality against bytes, {length} tokens](RESULTS-kv-bytes/bytes-{length}.png)", ""]
    if extra:
        lines += [extra.strip(), ""]
    lines.append(MARKERS[1])
    return lines


def targets(length: int, table: dict) -> list[str]:
    out = [f"Targets at {length} tokens:"]
    for task, ratio, need in (("niah", 0.875, 0.95), ("niah_multikey", 0.875, 0.90)):
        full, top = table.get(("tokensift", task, "full", 0.0)), best(table, task, ratio)
        if full and top and full["quality"]:
            share = top[1]["quality"] / full["quality"]
            verdict = "met" if share >= need else "NOT met"
            out.append(
                f"- {task} at 12.5 % bytes ≥ {need:.0%} of uncompressed: {top[0]} {top[1]['quality']:.2f} vs full "
                f"{full['quality']:.2f} = {share:.0%} → **{verdict}**"
            )
    full, top = table.get(("tokensift", "nq_qa", "full", 0.0)), best(table, "nq_qa", 0.75)
    if full and top:
        gap = full["quality"] - top[1]["quality"]
        out.append(
            f"- nq_qa gold log-prob at 25 % bytes within 0.5 nats: {top[0]} {top[1]['quality']:.2f} vs full "
            f"{full['quality']:.2f} (gap {gap:.2f}) → **{'met' if gap <= 0.5 else 'NOT met'}**"
        )
    worst = max(
        (abs(c["bytes"] - (1 - k[3])) / (1 - k[3]), k[2], k[3])
        for k, c in table.items()
        if k[0] == "tokensift" and k[2] != "full"
    )
    out.append(
        f"- measured bytes = budget ± 2 %: largest relative deviation {worst[0]:.1%} ({worst[1]} at ratio {worst[2]}) "
        f"→ **{'met' if worst[0] <= 0.02 else 'NOT met'}**"
    )
    return out


def plot(length: int, rows: list[dict[str, Any]]) -> None:
    table = cells(rows)
    tasks = [t for t in METRIC if any(k[1] == t for k in table)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        methods = sorted({(k[0], k[2]) for k in table if k[1] == task and k[2] != "full"})
        colours = plt.get_cmap("tab20")
        for index, (system, method) in enumerate(methods):
            points = sorted(
                (c["bytes"], c["quality"])
                for k, c in table.items()
                if (k[0], k[1], k[2]) == (system, task, method) and c["quality"] is not None
            )
            if points:
                style = "--" if system != "tokensift" else "-"
                ax.plot(
                    *zip(*points, strict=True),
                    style,
                    color=colours(index % 20),
                    marker="o",
                    label=f"{method}" + ("" if system == "tokensift" else f" ({system})"),
                )
        full = table.get(("tokensift", task, "full", 0.0))
        if full:
            ax.axhline(full["quality"], color="black", linewidth=0.8, label="full cache")
        ax.set_xscale("log")
        ax.set_xlabel("cache bytes kept (fraction of full)")
        ax.set_ylabel(METRIC[task])
        ax.set_title(f"{task}, {length} tokens")
    axes[0][-1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    FOLDER.mkdir(exist_ok=True)
    fig.savefig(FOLDER / f"bytes-{length}.png", dpi=110)
    plt.close(fig)
    with (FOLDER / f"summary-{length}.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["system", "task", "method", "ratio", "quality", "n", "bytes", "x_prefill", "token_ratio"])
        for k, c in sorted(table.items()):
            writer.writerow(
                [*k, c["quality"], c["n"], f"{c['bytes']:.5f}", f"{c['cost']:.3f}", f"{c['token_ratio']:.4f}"]
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, help="LENGTH=FOLDER (repeatable)")
    parser.add_argument("--extra", type=Path, help="Markdown appended to the section (timings measured apart)")
    parser.add_argument("--lead", type=Path, help="Markdown put before the generated tables (runs made apart)")
    args = parser.parse_args()
    runs = {}
    for item in args.run:
        length, folder = item.split("=", 1)
        runs[int(length)] = rows_of(Path(folder))
        plot(int(length), runs[int(length)])
    text = RESULTS.read_text(encoding="utf-8")
    extra = args.extra.read_text(encoding="utf-8") if args.extra else ""
    lead = args.lead.read_text(encoding="utf-8") if args.lead else ""
    block = "\n".join(section(runs, extra, lead))
    pattern = re.compile(re.escape(MARKERS[0]) + ".*?" + re.escape(MARKERS[1]), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:  # first time: right after the title and the line that says how to produce the page
        head, rest = text.split("\n## ", 1)
        text = f"{head}\n{block}\n\n## {rest}"
    RESULTS.write_text(text, encoding="utf-8")
    print(f"wrote {RESULTS} and {FOLDER}/")


if __name__ == "__main__":
    main()
