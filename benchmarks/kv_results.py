"""Write benchmarks/RESULTS-kv.md (and the report folder's report.md, summary.csv, plots) from a KV bench folder.

.venv/bin/python benchmarks/kv_results.py --out benchmarks/out/kv
"""

from __future__ import annotations

import argparse
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

from tokensift.bench import RowStore, summarize
from tokensift.kv.bench import QUALITY, KVBenchConfig, KVBenchmark

HERE = Path(__file__).resolve().parent


def _cells(rows: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    return {(r["system"], r["task"], r["mode"], r["method"], float(r["ratio"])): r for r in summarize(rows)}


def _best(cells: dict[tuple, dict[str, Any]], system: str, task: str, mode: str, ratio: float, metric: str) -> str:
    cand = [
        c
        for k, c in cells.items()
        if k[:3] == (system, task, mode) and k[4] == ratio and k[3] != "full" and c.get(metric) is not None
    ]
    if not cand:
        return "–"
    top = max(cand, key=lambda c: c[metric])
    ties = sorted(c["method"] for c in cand if c[metric] == top[metric])
    label = "all methods" if len(ties) == len(cand) else ", ".join(ties)
    return f"{label} {top[metric]:.2f} (n={top['n']})"


def _full(cells: dict[tuple, dict[str, Any]], system: str, task: str, mode: str, metric: str) -> str:
    full = cells.get((system, task, mode, "full", 0.0))
    return f"{full[metric]:.2f} (n={full['n']})" if full else "–"


def _headline(
    cells: dict[tuple, dict[str, Any]], paired: dict[tuple, dict[str, Any]], task: str, metric: str
) -> list[str]:
    """Best method per mode and kept fraction: tokensift on all its samples, then both systems on kvpress's samples."""
    lines = [
        f"### {task} ({metric})",
        "",
        "| mode | kept | full cache | best tokensift | kvpress's samples: full cache | best tokensift | best kvpress |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode in sorted({k[2] for k in cells if k[1] == task}):
        for ratio in sorted({k[4] for k in cells if k[1] == task and k[2] == mode and k[4] > 0}):
            lines.append(
                f"| {mode} | {1 - ratio:.1%} | {_full(cells, 'tokensift', task, mode, metric)} | "
                f"{_best(cells, 'tokensift', task, mode, ratio, metric)} | "
                f"{_full(paired, 'tokensift', task, mode, metric)} | "
                f"{_best(paired, 'tokensift', task, mode, ratio, metric)} | "
                f"{_best(cells, 'kvpress', task, mode, ratio, metric)} |"
            )
    return lines


def _on_peer_samples(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """tokensift's rows for the (task, mode, sample) triples that kvpress also ran."""
    peer = {(r["task"], r["mode"], r["sample_id"]) for r in rows if r["system"] == "kvpress"}
    return [r for r in rows if r["system"] == "tokensift" and (r["task"], r["mode"], r["sample_id"]) in peer]


def _bytes_check(rows: list[dict[str, Any]]) -> list[str]:
    worst: dict[str, float] = defaultdict(float)
    for r in rows:
        if r["system"] == "tokensift" and r["method"] != "full" and r["task"] != "decode_speed":
            worst[r["method"]] = max(worst[r["method"]], abs(r["kept_fraction"] - (1 - r["ratio"])))
    lines = ["| method | max abs(measured kept bytes fraction − (1 − ratio)) |", "|---|---|"]
    lines += [f"| {m} | {v:.4f} |" for m, v in sorted(worst.items())]
    return lines


def _speed(rows: list[dict[str, Any]]) -> list[str]:
    """One line per method: decode ms/token (cache MiB) at each kept fraction, the full cache on top."""
    speed = {(r["method"], float(r["ratio"])): r for r in rows if r["task"] == "decode_speed"}
    if not speed:
        return ["(not measured)"]
    ratios = sorted({ratio for method, ratio in speed if method != "full"})
    context = next(iter(speed.values()))["context_tokens"]
    lines = [
        f"Context {context} tokens; each cell: decode ms/token (cache MiB).",
        "",
        "| method | " + " | ".join(f"kept {1 - r:.1%}" for r in ratios) + " |",
        "|---|" + "---|" * len(ratios),
    ]
    full = speed.get(("full", 0.0))
    if full:
        cell = f"{full['decode_s_per_token'] * 1000:.0f} ({full['cache_bytes'] / 2**20:.1f})"
        lines.append("| full cache | " + " | ".join([cell] * len(ratios)) + " |")
    for method in sorted({m for m, _ in speed if m != "full"}):
        cells = []
        for ratio in ratios:
            r = speed.get((method, ratio))
            cells.append(f"{r['decode_s_per_token'] * 1000:.0f} ({r['cache_bytes'] / 2**20:.1f})" if r else "–")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=HERE / "out" / "kv")
    args = parser.parse_args()
    rows = RowStore(args.out).rows()
    config = KVBenchConfig(
        out=args.out,
        model="smollm2-135m",
        tasks=("niah", "niah_multikey", "nq_qa", "kv_retrieval", "fidelity"),
        samples=30,
        report_only=True,
        command="bash benchmarks/run-kv.sh",
    )
    report = KVBenchmark(config).run()
    plots = HERE / "kv-plots"
    if plots.exists():
        shutil.rmtree(plots)
    shutil.copytree(args.out / "plots", plots)
    cells = _cells(rows)
    paired = _cells(_on_peer_samples(rows))
    equivalence = args.out / "equivalence.json"
    notes = (HERE / "kv-notes.md").read_text(encoding="utf-8") if (HERE / "kv-notes.md").exists() else ""
    body = report.read_text(encoding="utf-8").replace("](plots/", "](kv-plots/")
    out = [
        "# KV-cache compression — results",
        "",
        "Produced by one command (resumable; each step skips finished rows):",
        "",
        "```bash",
        "bash benchmarks/run-kv.sh",
        "```",
        "",
        notes,
        "## Headline: best method per kept fraction, tokensift vs kvpress",
        "",
    ]
    for task, metric in QUALITY.items():
        if any(k[1] == task for k in cells):
            out += [*_headline(cells, paired, task, metric), ""]
    out += ["## Measured cache bytes vs kept fraction", "", *_bytes_check(rows), ""]
    out += ["## Decode time per token (batch 1, 2k context)", "", *_speed(rows), ""]
    out += ["## kvpress equivalence (share of kept indices that agree, same inputs and budget)", ""]
    out += ["```json", equivalence.read_text() if equivalence.exists() else "(not run)", "```", ""]
    out += ["## Full tables", "", body.split("\n", 1)[1]]
    (HERE / "RESULTS-kv.md").write_text("\n".join(out), encoding="utf-8")
    print(f"wrote {HERE / 'RESULTS-kv.md'}")


if __name__ == "__main__":
    main()
