"""From benchmark rows to a report: per-cell means (summary.csv), PNG plots and a Markdown page."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tokensift.bench.store import KEY_FIELDS

GROUP_FIELDS = tuple(f for f in KEY_FIELDS if f != "sample_id")
_NOT_METRICS = {*KEY_FIELDS, "seed"}


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def summarize(rows: Iterable[dict[str, Any]], group_by: Sequence[str] = GROUP_FIELDS) -> list[dict[str, Any]]:
    """One record per cell: the group fields, ``n`` (rows) and the mean of every numeric field
    (booleans average to a fraction). Rows with an ``error`` are counted in ``errors``, not in means."""
    cells: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        cells[tuple(row.get(f) for f in group_by)].append(row)
    summary = []
    for key, members in cells.items():
        ok = [r for r in members if not r.get("error")]
        record: dict[str, Any] = dict(zip(group_by, key, strict=True))
        record["n"] = len(ok)
        record["errors"] = len(members) - len(ok)
        totals: dict[str, list[float]] = defaultdict(list)
        for row in ok:
            for name, value in row.items():
                number = _numeric(value)
                if name not in _NOT_METRICS and number is not None:
                    totals[name].append(number)
        for name in sorted(totals):
            record[name] = sum(totals[name]) / len(totals[name])
        summary.append(record)
    return sorted(summary, key=lambda r: tuple(str(r.get(f)) for f in group_by))


def write_csv(records: Sequence[dict[str, Any]], path: Path) -> None:
    """Write ``records`` with the union of their fields as columns (group fields first)."""
    columns = [*GROUP_FIELDS, "n", "errors"]
    columns += sorted({k for r in records for k in r} - set(columns))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(records)


def _label(record: dict[str, Any]) -> str:
    return record["method"] if record.get("system") == "tokensift" else f"{record['method']} ({record['system']})"


def _plot(
    summary: Sequence[dict[str, Any]], task: str, metric: str, x_field: str, path: Path, log_x: bool = False
) -> bool:
    """One subplot per mode, one line per system/method: ``metric`` against ``x_field``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in summary if r["task"] == task and metric in r and x_field in r]
    if not records:
        return False
    modes = sorted({str(r["mode"]) for r in records})
    methods = sorted({str(r["method"]) for r in records})
    palette = plt.get_cmap("tab20")
    colour = {m: palette(i % 20) for i, m in enumerate(methods)}  # one colour per method; peers dashed
    fig, axes = plt.subplots(1, len(modes), figsize=(5.5 * len(modes) + 2.2, 4.2), squeeze=False, sharey=True)
    for ax, mode in zip(axes[0], modes, strict=True):
        lines: dict[str, list[tuple[float, float]]] = defaultdict(list)
        method_of: dict[str, str] = {}
        for r in records:
            if str(r["mode"]) == mode:
                lines[_label(r)].append((r[x_field], r[metric]))
                method_of[_label(r)] = str(r["method"])
        for label, points in sorted(lines.items()):
            points.sort()
            ax.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                marker="o",
                label=label,
                color=colour[method_of[label]],
                linestyle="--" if "(" in label else "-",
            )
        ax.set_title(f"{task} · {mode}")
        ax.set_xlabel(x_field.replace("_", " "))
        if log_x:
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(metric.replace("_", " "))
    handles: dict[str, Any] = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    order = sorted(handles)
    fig.legend([handles[k] for k in order], order, fontsize=7, loc="center right", frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 2.0 / fig.get_figwidth(), 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _markdown(
    summary: Sequence[dict[str, Any]],
    *,
    title: str,
    command: str,
    quality: dict[str, str],
    cost: Sequence[str],
    notes: Sequence[str],
    plots: Sequence[Path],
) -> str:
    out = [f"# {title}", "", "Produced by:", "", "```bash", command, "```", ""]
    out += [f"- {note}" for note in notes]
    for task, metric in quality.items():
        for mode in sorted({str(r["mode"]) for r in summary if r["task"] == task}):
            cell = [r for r in summary if r["task"] == task and str(r["mode"]) == mode]
            ratios = sorted({float(r["ratio"]) for r in cell}, reverse=True)
            out += ["", f"## {task} · {mode} — {metric} (mean, n)", ""]
            out.append("| system | method | " + " | ".join(f"ratio {x:g}" for x in ratios) + " |")
            out.append("|---|---|" + "---|" * len(ratios))
            for system, method in sorted({(r["system"], r["method"]) for r in cell}):
                values = {float(r["ratio"]): r for r in cell if (r["system"], r["method"]) == (system, method)}
                shown = [
                    f"{_fmt(values[x][metric])} ({values[x]['n']})" if x in values and metric in values[x] else "–"
                    for x in ratios
                ]
                out.append(f"| {system} | {method} | " + " | ".join(shown) + " |")
            present = [c for c in cost if any(c in r for r in cell)]
            if present:
                out += ["", f"Cost, {task} · {mode}:", ""]
                out.append("| system | method | ratio | " + " | ".join(present) + " |")
                out.append("|---|---|---|" + "---|" * len(present))
                for r in cell:
                    out.append(
                        f"| {r['system']} | {r['method']} | {float(r['ratio']):g} | "
                        + " | ".join(_fmt(r.get(c, "–")) for c in present)
                        + " |"
                    )
    if plots:
        out += ["", "## Plots", ""] + [f"![{p.stem}]({p.parent.name}/{p.name})" for p in plots]
    return "\n".join(out) + "\n"


def write_report(
    out_dir: str | Path,
    rows: Sequence[dict[str, Any]],
    *,
    title: str,
    command: str,
    quality: dict[str, str],
    cost: Sequence[str] = (),
    notes: Sequence[str] = (),
    x_field: str = "kept_fraction",
) -> Path:
    """Write ``summary.csv``, ``plots/*.png`` and ``report.md`` into ``out_dir``; return the report path.

    ``quality`` maps each task to its headline metric (a numeric row field); ``cost`` names the cost
    fields shown per cell; plots draw quality against ``x_field`` (achieved kept fraction by default)
    and, where rows have ``cache_bytes``, against cache bytes.
    """
    folder = Path(out_dir)
    (folder / "plots").mkdir(parents=True, exist_ok=True)
    summary = summarize(rows)
    write_csv(summary, folder / "summary.csv")
    plots = []
    for task, metric in quality.items():
        for x, log_x in ((x_field, False), ("cache_bytes", True)):
            path = folder / "plots" / f"{task}_{metric}_vs_{x}.png"
            if _plot(summary, task, metric, x, path, log_x=log_x):
                plots.append(path)
    report = folder / "report.md"
    report.write_text(
        _markdown(summary, title=title, command=command, quality=quality, cost=cost, notes=notes, plots=plots),
        encoding="utf-8",
    )
    return report
