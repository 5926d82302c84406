"""Terminal view of an inspection with rich: the heat-mapped text, a summary and the top tokens."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from tokensift.inspection import Inspection
from tokensift.report.colors import heat_hex, ink_for
from tokensift.report.html import scale_max
from tokensift.report.segments import segments


def heat_text(inspection: Inspection, *, max_chars: int | None = None) -> Text:
    """The input text with each token's background coloured by surprisal; flagged tokens underlined."""
    vmax = scale_max(inspection)
    end = inspection.tokens[-1].end if inspection.truncated else len(inspection.text)
    if max_chars is not None:
        end = min(end, max_chars)
    out = Text()
    for piece, token in segments(inspection.text[:end], inspection.tokens):
        if token is None or token.surprisal is None:
            out.append(piece)
            continue
        level = token.surprisal / vmax
        style = f"{ink_for(level)} on {heat_hex(level)}" + (" bold underline" if token.flagged else "")
        out.append(piece, style=style)
    if end < len(inspection.text):
        out.append(f" … [{len(inspection.text) - end:,} more characters not shown]", style="dim")
    return out


def summary_table(inspection: Inspection) -> Table:
    table = Table(show_header=False, box=None)
    table.add_row("model", inspection.model)
    scored = f"{len(inspection.scored):,} of {inspection.total_tokens:,}"
    if inspection.truncated:
        scored += " (truncated on request: --max-tokens)"
    table.add_row("tokens scored", scored)
    table.add_row("windows", f"{len(inspection.windows)}")
    table.add_row("perplexity", f"{inspection.perplexity:.2f}")
    table.add_row("flag rule", f"{inspection.rule.describe()} → threshold {inspection.threshold:.2f} nats")
    table.add_row("flagged", f"{sum(t.flagged for t in inspection.tokens)} tokens")
    table.add_row("time", f"{inspection.seconds:.1f} s")
    return table


def top_tokens_table(inspection: Inspection, n: int = 10) -> Table:
    table = Table(title=f"Top {n} most surprising tokens")
    for column in ("#", "token", "surprisal", "entropy", "context"):
        table.add_column(column, justify="right" if column in ("#", "surprisal", "entropy") else "left")
    ranked = sorted(inspection.scored, key=lambda t: -(t.surprisal or 0.0))[:n]
    for token in ranked:
        left = inspection.text[max(0, token.start - 30) : token.start].replace("\n", " ").replace("\r", "")
        context = (
            Text(left, style="dim")
            + Text(token.text, style="bold")
            + Text(inspection.text[token.end : token.end + 15].replace("\n", " ").replace("\r", ""), style="dim")
        )
        table.add_row(str(token.index), repr(token.text), f"{token.surprisal:.2f}", f"{token.entropy:.2f}", context)
    return table


def lines_table(inspection: Inspection, n: int = 15) -> Table:
    table = Table(
        title=f"Lines ranked by mean surprisal (top {min(n, len(inspection.lines))} of {len(inspection.lines)})"
    )
    for column in ("rank", "line", "tokens", "mean", "max", "flagged", "text"):
        table.add_column(column, justify="left" if column == "text" else "right")
    for record in sorted(inspection.lines, key=lambda r: r.rank)[:n]:
        table.add_row(
            str(record.rank),
            str(record.line),
            str(record.tokens),
            f"{record.mean_surprisal:.2f}",
            f"{record.max_surprisal:.2f}",
            str(record.flagged_tokens),
            record.text[:80],
        )
    return table


def print_inspection(
    console: Console, inspection: Inspection, *, max_chars: int | None = None, show_lines: bool = False, top: int = 10
) -> None:
    console.print(heat_text(inspection, max_chars=max_chars))
    console.print()
    console.print(summary_table(inspection))
    console.print(top_tokens_table(inspection, top))
    if show_lines:
        console.print(lines_table(inspection))
