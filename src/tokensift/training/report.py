"""The training benchmark's own report sections: the headline tables, the targets checked, and its plots
(held-out log-prob against tokens back-propagated and against wall time, and the training-loss curves)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

FULL = "full"
START = "start"


def _share(row: dict[str, Any], start: dict[str, Any] | None, full: dict[str, Any]) -> str:
    """How much of the full run's held-out log-prob gain over the starting model a run kept."""
    if start is None or full["logprob"] == start["logprob"]:
        return "–"
    return f"{(row['logprob'] - start['logprob']) / (full['logprob'] - start['logprob']):.0%}"


def _pct(value: float) -> str:
    return f"{value:+.2%}"


def _by(rows: Sequence[dict[str, Any]], task: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["task"] == task and not r.get("error")]


def selective_table(rows: Sequence[dict[str, Any]]) -> tuple[list[str], dict[str, Any] | None]:
    """Markdown lines of the selective grid against the full-loss row (``None`` when there is no full row)."""
    found = _by(rows, "selective")
    full = next((r for r in found if r["method"] == FULL), None)
    if full is None:
        return [], None
    start = next((r for r in found if r["method"] == START), None)
    lines = [
        "| method | backward | tokens trained | held-out logprob | vs full | share of full's gain | accuracy "
        "| positions back-propagated | backward s | backward ÷ full | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {START: 0, FULL: 1}
    for r in sorted(found, key=lambda r: (order.get(r["method"], 2), -r["kept_fraction"], r["mode"], r["method"])):
        accuracy = "–" if r.get("accuracy") is None else f"{r['accuracy']:.1%} of {r['answered']}"
        lines.append(
            f"| {r['method']} | {r['mode']} | {r['kept_fraction']:.0%} | {r['logprob']:.4f} | "
            f"{_pct((r['logprob'] - full['logprob']) / abs(full['logprob']))} | {_share(r, start, full)} | "
            f"{accuracy} | "
            f"{r['backward_positions']:,} | {r['backward_s']:.2f} | {r['backward_s'] / full['backward_s']:.2f} | "
            f"{r['wall_s']:.1f} |"
        )
    return lines, full


def _judged(
    r: dict[str, Any], random_row: dict[str, Any] | None, full: dict[str, Any], saving: str, speed: float, missing: str
) -> str:
    """The target's three parts read on run ``r``: within 2 % of the full run's logprob, ``saving`` (≥ 1.5×
    less backward, ``speed``), better than ``random_row`` (``missing`` says there is none); then the verdict."""
    gap = (full["logprob"] - r["logprob"]) / abs(full["logprob"])
    beats = random_row is not None and r["logprob"] > random_row["logprob"]
    met = gap <= 0.02 and speed >= 1.5 and beats
    if random_row is None:
        versus = missing
    else:
        verdict = "beats" if beats else "does not beat"
        versus = f"{verdict} random{' at 30 %' if r['task'] == 'selective' else ''} ({random_row['logprob']:.4f}, "
        versus += f"{r['logprob']:.4f} here)"
    return (
        f"logprob {abs(gap):.2%} {'below' if gap > 0 else 'above'} full (target: at most 2 % below), "
        f"{saving} (target ≥ 1.5×), {versus} → **{'met' if met else 'not met'}**"
    )


def _random_beside(rows: Sequence[dict[str, Any]], r: dict[str, Any]) -> dict[str, Any] | None:
    return next((x for x in rows if x["method"] == "random" and x["mode"] == r["mode"]), None)


def targets(rows: Sequence[dict[str, Any]], full: dict[str, Any]) -> list[str]:
    """The issue's selective-loss target at 30 % kept, checked on the rows (met or not, with the numbers)."""
    found = _by(rows, "selective")
    speeds = _by(rows, "speed")
    at30 = [r for r in found if abs(float(r["ratio"]) - 0.7) < 1e-9]
    lines = []
    modes = {"sparse": 0, "response": 1, "exact": 2}
    for r in sorted(at30, key=lambda r: (modes.get(r["mode"], 3), r["method"])):
        if r["method"] not in ("rho1", "eslm"):
            continue
        timed = next((x for x in speeds if x["mode"] == r["mode"] and x["ratio"] == r["ratio"]), None)
        speed = timed["backward_speedup"] if timed else full["backward_s"] / r["backward_s"]
        judged = _judged(
            r, _random_beside(at30, r), full, f"backward {speed:.2f}× less", speed, "no random run at 30 % in this mode"
        )
        lines.append(f"- {r['method']} at 30 % ({r['mode']} backward): {judged}")
    return lines


def budget_table(rows: Sequence[dict[str, Any]], full: dict[str, Any]) -> list[str]:
    """The fixed-backward-compute runs against the full-loss run (positions and measured seconds)."""
    found = _by(rows, "budget")
    if not found:
        return []
    lines = [
        "| budget | method | tokens trained | steps | held-out logprob | vs full | positions back-propagated "
        "| full ÷ this (positions) | backward s | full ÷ this (seconds) | wall s | accuracy |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(found, key=lambda r: (r["budget_factor"], -r["kept_fraction"], r["method"])):
        accuracy = "–" if r.get("accuracy") is None else f"{r['accuracy']:.1%} of {r['answered']}"
        lines.append(
            f"| 1/{r['budget_factor']:g} | {r['method']} | {r['kept_fraction']:.0%} | {r['steps']} | "
            f"{r['logprob']:.4f} | "
            f"{_pct((r['logprob'] - full['logprob']) / abs(full['logprob']))} | {r['backward_positions']:,} | "
            f"{full['backward_positions'] / r['backward_positions']:.2f}× | {r['backward_s']:.1f} | "
            f"{full['backward_s'] / r['backward_s']:.2f}× | {r['wall_s']:.1f} | {accuracy} |"
        )
    return lines


def budget_targets(rows: Sequence[dict[str, Any]], full: dict[str, Any]) -> list[str]:
    """The selective-loss target read on the fixed-compute runs at 30 % kept (measured backward seconds)."""
    at30 = [r for r in _by(rows, "budget") if abs(float(r["ratio"]) - 0.7) < 1e-9]
    lines = []
    for r in sorted(at30, key=lambda r: (r["budget_factor"], r["method"])):
        if r["method"] not in ("rho1", "eslm"):
            continue
        speed = full["backward_s"] / r["backward_s"]
        saving = f"backward seconds {speed:.2f}× less than the full run's"
        judged = _judged(r, _random_beside(at30, r), full, saving, speed, "no random run at this budget")
        lines.append(
            f"- {r['method']} at 30 %, {r['steps']} steps on 1/{r['budget_factor']:g} of the full run's backward "
            f"positions: {judged}"
        )
    return lines


def speed_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The interleaved timing of one training step per backward mode and budget."""
    found = _by(rows, "speed")
    if not found:
        return []
    lines = [
        "| selection | backward | tokens trained | positions back-propagated | forward s | backward s "
        "| backward speed-up | step s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(found, key=lambda r: (r["method"] != FULL, r["mode"], -r["kept_fraction"])):
        lines.append(
            f"| {r['method']} | {r['mode']} | {r['kept_fraction']:.0%} | {r['backward_positions']:,} | "
            f"{r['forward_s']:.2f} | {r['backward_s']:.2f} | {r['backward_speedup']:.2f}× | {r['step_s']:.2f} |"
        )
    return lines


def data_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    found = _by(rows, "data_selection")
    if not found:
        return []
    lines = [
        "| subset | rows | steps | held-out logprob | accuracy | scoring s | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("top", "random", "all"):
        r = next((x for x in found if x["method"] == name), None)
        if r is None:
            continue
        accuracy = "–" if r.get("accuracy") is None else f"{r['accuracy']:.1%} of {r['answered']}"
        lines.append(
            f"| {name} | {r['rows']} | {r['steps']} | {r['logprob']:.4f} | {accuracy} | {r['scoring_s']:.0f} | "
            f"{r['wall_s']:.0f} |"
        )
    top = next((x for x in found if x["method"] == "top"), None)
    rand = next((x for x in found if x["method"] == "random"), None)
    if top and rand:
        verdict = "beats" if top["logprob"] > rand["logprob"] else "does **not** beat"
        lines += [
            "",
            f"Top {top['rows']} by score {verdict} a random {rand['rows']} on held-out logprob "
            f"({top['logprob']:.4f} vs {rand['logprob']:.4f}).",
        ]
    return lines


def plots(rows: Sequence[dict[str, Any]], folder: Path) -> list[Path]:
    """Held-out logprob against positions back-propagated and against wall seconds; loss curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = _by(rows, "selective")
    if not found:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    palette = plt.get_cmap("tab10")
    methods = sorted({r["method"] for r in found})
    for ax, field, label in (
        (axes[0], "backward_positions", "positions back-propagated"),
        (axes[1], "wall_s", "wall seconds"),
    ):
        for i, method in enumerate(methods):
            points = sorted((r[field], r["logprob"]) for r in found if r["method"] == method)
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color=palette(i), label=method)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out logprob / token")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    path = folder / "selective_logprob_vs_cost.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    made.append(path)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, r in enumerate(sorted(found, key=lambda r: (r["method"], r["ratio"]))):
        losses = r.get("losses") or []
        ax.plot(
            range(1, len(losses) + 1), losses, color=palette(i % 10), label=f"{r['method']} {r['kept_fraction']:.0%}"
        )
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (selected tokens)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = folder / "selective_loss_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    made.append(path)
    return made


def training_sections(bench: Any, rows: Sequence[dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    table, full = selective_table(rows)
    if table:
        lines += ["", "## Selective loss (GSM8K fine-tune)", "", *table]
        checked = targets(rows, full) if full else []
        if checked:
            lines += [
                "",
                "Target: at 30 % of tokens trained, within 2 % of the full run's held-out logprob, ≥ 1.5× less "
                "backward time (the interleaved step timing below where measured), better than random:",
                "",
                *checked,
            ]
    budget = budget_table(rows, full) if full else []
    if budget:
        lines += [
            "",
            "## Fixed backward compute (sparse backward until 1/budget-factor of the full run's positions)",
            "",
            *budget,
        ]
        checked = budget_targets(rows, full) if full else []
        if checked:
            lines += ["", "Target at a fixed backward compute:", "", *checked]
    speed = speed_table(rows)
    if speed:
        lines += [
            "",
            f"## Cost of one step (medians of {_by(rows, 'speed')[0]['batches']} batches, the modes taking turns)",
            "",
            *speed,
        ]
    data = data_table(rows)
    if data:
        lines += ["", "## Data selection (score-data)", "", *data]
    results = bench.config.results
    folder = bench.config.out if results is None else results.parent / results.stem
    made = plots(rows, folder / "plots")
    if made:
        lines += ["", "## Training plots", ""] + [
            f"![{p.stem}]({'plots' if results is None else folder.name + '/plots'}/{p.name})" for p in made
        ]
    return lines
