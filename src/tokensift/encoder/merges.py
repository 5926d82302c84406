"""Which input tokens ended in which output token: merge groups of one text, for the terminal and HTML.

Each output token of the reduced encoder is a group of input tokens (one token when nothing was merged
into it); pruned tokens belong to no group. Groups are coloured by size on the shared heat palette.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import torch
from rich.console import Console
from rich.text import Text

from tokensift.encoder.methods.base import EncoderMethod
from tokensift.encoder.patch import EncoderPatch
from tokensift.encoder.schedule import Schedule
from tokensift.errors import InputError
from tokensift.report.colors import heat_hex, ink_for
from tokensift.report.segments import segments


@dataclass
class MergeToken:
    """One input token: its text span and the output token (group) it ended in; None when pruned."""

    index: int
    text: str
    start: int
    end: int
    group: int | None


@dataclass
class MergeView:
    """The merge groups of one text after reduction."""

    text: str
    method: str
    tokens: list[MergeToken]
    groups: list[list[int]]
    """Input token indices per output token, in output order."""

    def group_size(self, group: int | None) -> int:
        return 0 if group is None else len(self.groups[group])

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "input_tokens": len(self.tokens),
            "output_tokens": len(self.groups),
            "tokens": [t.__dict__ for t in self.tokens],
            "groups": [
                {"group": g, "size": len(m), "members": m, "texts": [self.tokens[i].text for i in m]}
                for g, m in enumerate(self.groups)
            ],
        }


@torch.inference_mode()
def merge_view(
    model: Any,
    tokenizer: Any,
    text: str,
    method: EncoderMethod,
    schedule: Schedule,
    *,
    method_name: str,
    max_length: int,
    truncate: bool = False,
) -> MergeView:
    """Run ``text`` through ``model`` with ``method`` and report its merge groups."""
    encoded = tokenizer(text, return_offsets_mapping=True, truncation=truncate, max_length=max_length)
    if len(encoded["input_ids"]) > max_length:
        raise InputError(
            f"the text has {len(encoded['input_ids'])} tokens, more than the {max_length} the model takes; "
            "pass --truncate to cut it"
        )
    ids = torch.tensor([encoded["input_ids"]])
    with EncoderPatch(model, method, schedule) as patch:
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert patch.last is not None
    groups = patch.last.groups(0)
    group_of = {i: g for g, members in enumerate(groups) for i in members}
    names = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    tokens = [
        MergeToken(i, name, int(start), int(end), group_of.get(i))
        for i, (name, (start, end)) in enumerate(zip(names, encoded["offset_mapping"], strict=True))
    ]
    return MergeView(text, method_name, tokens, groups)


def _level(view: MergeView, size: int) -> float:
    largest = max((len(g) for g in view.groups), default=1)
    return 0.0 if largest <= 1 else 0.15 + 0.85 * (size - 1) / (largest - 1)


def _visible(view: MergeView) -> list[MergeToken]:
    return [t for t in view.tokens if t.end > t.start]  # special tokens have empty spans


def print_merges(console: Console, view: MergeView) -> None:
    """The text with tokens coloured by group size (pruned tokens struck through), then the groups."""
    out = Text()
    for piece, token in segments(view.text, _visible(view)):
        if token is None:
            out.append(piece)
        elif token.group is None:
            out.append(piece, style="dim strike")
        elif view.group_size(token.group) == 1:
            out.append(piece)
        else:
            level = _level(view, view.group_size(token.group))
            out.append(piece, style=f"{ink_for(level)} on {heat_hex(level)}")
    console.print(out)
    console.print(
        f"\n[bold]{view.method}[/bold]: {len(view.tokens)} input tokens -> {len(view.groups)} output tokens"
        f" ({sum(t.group is None for t in view.tokens)} pruned)"
    )
    for g, members in enumerate(view.groups):
        if len(members) > 1:
            texts = " · ".join(view.tokens[i].text for i in members)
            console.print(f"  #{g} ×{len(members)}: {texts}", highlight=False)


def merges_html(view: MergeView) -> str:
    """A self-contained HTML page of the merge groups (hover a token for its group)."""
    parts = []
    for piece, token in segments(view.text, _visible(view)):
        escaped = html.escape(piece)
        if token is None:
            parts.append(escaped)
        elif token.group is None:
            parts.append(f'<s title="pruned">{escaped}</s>')
        else:
            size = view.group_size(token.group)
            level = _level(view, size)
            tip = html.escape(f"token #{token.index} {token.text!r} -> group #{token.group} (size {size})", quote=True)
            style = f"background:{heat_hex(level)};color:{ink_for(level)}" if size > 1 else ""
            parts.append(f'<span class="t g{token.group}" style="{style}" title="{tip}">{escaped}</span>')
    rows = "".join(
        f"<tr><td>#{g}</td><td>{len(m)}</td><td>{html.escape(' · '.join(view.tokens[i].text for i in m))}</td></tr>"
        for g, m in enumerate(view.groups)
        if len(m) > 1
    )
    pruned = sum(t.group is None for t in view.tokens)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>tokensift merges</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:60em}"
        ".text{font-family:ui-monospace,monospace;white-space:pre-wrap;line-height:1.9;border:1px solid #ddd;"
        "padding:1em;border-radius:6px}.t{border-radius:3px}td,th{border:1px solid #ddd;padding:.25em .6em}"
        "table{border-collapse:collapse}</style></head><body>"
        f"<h1>tokensift merges · {html.escape(view.method)}</h1>"
        f"<p>{len(view.tokens)} input tokens → {len(view.groups)} output tokens ({pruned} pruned). "
        "Colour: size of the group a token was merged into; struck through: pruned.</p>"
        f"<div class='text'>{''.join(parts)}</div>"
        f"<h2>Merged groups</h2><table><tr><th>group</th><th>size</th><th>tokens</th></tr>{rows}</table>"
        "</body></html>\n"
    )
