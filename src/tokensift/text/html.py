"""Self-contained HTML page for a compression: every word of the input, kept ones coloured by their
score, dropped ones struck through in grey. Hover a word for its score. No scripts or external assets."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

from tokensift.report.colors import heat_hex, ink_for
from tokensift.report.segments import segments
from tokensift.text.api import Compression, UnitRecord

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
.text { font-family: ui-monospace, monospace; white-space: pre-wrap; line-height: 1.9; border: 1px solid #ddd;
        padding: 1em; border-radius: 6px; margin-bottom: 1em; }
.k { border-radius: 3px; }
.d { color: #aaa; text-decoration: line-through; }
.p { outline: 1px dashed #08306b; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ddd; padding: .25em .6em; text-align: left; font-size: 90%; }
"""


@dataclass
class _Span:
    start: int
    end: int
    unit: UnitRecord


def _scale(units: list[UnitRecord]) -> tuple[float, float]:
    values = sorted(u.score for u in units if u.score is not None and math.isfinite(u.score) and u.kind == "word")
    if not values:
        return 0.0, 1.0
    low, high = values[int(0.02 * (len(values) - 1))], values[int(0.98 * (len(values) - 1))]
    return low, high if high > low else low + 1.0


def _piece(text: str, unit: UnitRecord | None, low: float, high: float) -> str:
    escaped = html.escape(text)
    if unit is None or unit.kind == "layout":
        return escaped
    if unit.kind == "protected":
        return f'<span class="p" title="protected: always kept">{escaped}</span>'
    score = "not scored" if unit.score is None else f"score {unit.score:.3f}"
    if not unit.kept:
        return f'<span class="d" title="dropped · {score}">{escaped}</span>'
    level = 0.0 if unit.score is None else (unit.score - low) / (high - low)
    return (
        f'<span class="k" style="background:{heat_hex(level)};color:{ink_for(level)}" '
        f'title="kept · {score}">{escaped}</span>'
    )


def compression_html(result: Compression, *, title: str = "tokensift compress") -> str:
    """The whole page: a summary table and each part of the input with kept and dropped words."""
    low, high = _scale(result.units)
    blocks = []
    for number in sorted({u.part for u in result.units}):
        text = "".join(u.text for u in result.units if u.part == number)
        spans, position = [], 0
        for unit in (u for u in result.units if u.part == number):
            spans.append(_Span(position, position + len(unit.text), unit))
            position += len(unit.text)
        body = "".join(_piece(piece, None if s is None else s.unit, low, high) for piece, s in segments(text, spans))
        blocks.append(f'<div class="text">{body}</div>')
    summary = [
        ("method", result.method),
        ("tokenizer", result.tokenizer),
        ("tokens", f"{result.tokens_before:,} → {result.tokens_after:,} (budget {result.keep_tokens:,})"),
        ("kept", f"{result.kept_fraction:.3f}"),
        ("seconds", ", ".join(f"{k} {v:.2f}" for k, v in result.seconds.items())),
        *[("note", n) for n in result.notes],
    ]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in summary)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_STYLE}</style></head>
<body><h1>{html.escape(title)}</h1><table>{rows}</table>
<p>Kept words are coloured by their score (light = low, dark = high); dropped words are struck through;
dashed outlines are protected spans.</p>
{"".join(blocks)}
</body></html>
"""
