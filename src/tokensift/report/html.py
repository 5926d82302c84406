"""Self-contained HTML page for an inspection: the text as a surprisal heat map, a legend, a summary
and the per-line ranking. No scripts or external assets; hover a token for its numbers."""

from __future__ import annotations

import html

from tokensift.inspection import Inspection
from tokensift.report.colors import heat_hex, ink_for
from tokensift.report.segments import segments

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
.text { font-family: ui-monospace, monospace; white-space: pre-wrap; line-height: 1.9; border: 1px solid #ddd;
        padding: 1em; border-radius: 6px; }
.t { border-radius: 3px; }
.t.flag { outline: 2px solid #08306b; font-weight: bold; }
.legend { display: flex; align-items: center; gap: .6em; margin: 1em 0; }
.bar { height: 1em; width: 24em; border: 1px solid #999;
       background: linear-gradient(to right, %(gradient)s); }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ddd; padding: .25em .6em; text-align: left; font-size: 90%%; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #666; font-size: 90%%; }
"""


def scale_max(inspection: Inspection) -> float:
    """Upper end of the colour scale: the 99th percentile of surprisal (at least the flag threshold)."""
    values = sorted(t.surprisal for t in inspection.scored if t.surprisal is not None)
    if not values:
        return 1.0
    p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
    top = max(p99, inspection.threshold if inspection.threshold < float("inf") else 0.0)
    return top if top > 0 else 1.0


def inspection_html(inspection: Inspection, *, title: str = "tokensift inspect") -> str:
    """The whole page as a string."""
    vmax = scale_max(inspection)
    last = inspection.tokens[-1].end if inspection.truncated else len(inspection.text)
    parts = []
    for piece, token in segments(inspection.text[:last], inspection.tokens):
        escaped = html.escape(piece)
        if token is None or token.surprisal is None:
            parts.append(f'<span title="not scored">{escaped}</span>' if token else escaped)
            continue
        level = token.surprisal / vmax
        tip = (
            f"token #{token.index} {token.text!r}\nsurprisal {token.surprisal:.2f} nats"
            f"\nentropy {token.entropy:.2f} nats" + ("\nFLAGGED" if token.flagged else "")
        )
        css = "t flag" if token.flagged else "t"
        parts.append(
            f'<span class="{css}" style="background:{heat_hex(level)};color:{ink_for(level)}" '
            f'title="{html.escape(tip, quote=True)}">{escaped}</span>'
        )
    gradient = ", ".join(heat_hex(i / 10) for i in range(11))
    summary = [
        ("model", inspection.model),
        (
            "tokens scored",
            f"{len(inspection.scored):,} of {inspection.total_tokens:,}"
            + (" (truncated on request)" if inspection.truncated else ""),
        ),
        ("perplexity", f"{inspection.perplexity:.2f}"),
        ("flag rule", f"{inspection.rule.describe()} (threshold {inspection.threshold:.2f} nats)"),
        ("flagged tokens", str(sum(t.flagged for t in inspection.tokens))),
        ("windows", str(len(inspection.windows))),
    ]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in summary)
    lines = ""
    if len(inspection.lines) > 1:
        ranked = sorted(inspection.lines, key=lambda r: r.rank)[:50]
        body = "".join(
            f'<tr><td class="num">{r.rank}</td><td class="num">{r.line}</td>'
            f'<td class="num">{r.mean_surprisal:.2f}</td><td class="num">{r.max_surprisal:.2f}</td>'
            f'<td class="num">{r.flagged_tokens}</td><td>{html.escape(r.text[:160])}</td></tr>'
            for r in ranked
        )
        lines = (
            "<h2>Lines ranked by mean surprisal</h2><table><tr><th>rank</th><th>line</th><th>mean</th>"
            f"<th>max</th><th>flagged</th><th>text</th></tr>{body}</table>"
        )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE % {"gradient": gradient}}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<table>{rows}</table>
<div class="legend"><span>0 nats</span><div class="bar"></div><span>&ge; {vmax:.1f} nats</span>
<span class="t flag" style="padding:0 .3em">flagged</span></div>
<p class="note">Colour: surprisal &minus;log p(token | preceding text). Hover a token for its scores.</p>
<div class="text">{"".join(parts)}</div>
{lines}
</body></html>
"""
