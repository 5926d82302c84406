"""The KV step of ``tokensift demo``: the same question answered from the full cache and from a compressed one."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.rule import Rule
from rich.table import Table

NEEDLE = "The special magic number is 4817263."


def kv_side_by_side(out: Console, loaded: Any, text: str, *, method: str = "keydiff", ratio: float = 0.5) -> None:
    """Hide a needle in ``text``, compress the context's KV cache query-aware, and compare with the full cache."""
    import torch

    from tokensift.kv.api import press_from
    from tokensift.kv.cache import cache_bytes
    from tokensift.kv.qa import answer, compress_context
    from tokensift.kv.tasks import Sample, split_prompt

    out.print(Rule(f"tokensift demo · KV cache: full vs {method} keeping {1 - ratio:.0%} (query-aware)"))
    middle = len(text) // 2
    cut = text.find(". ", middle) + 2 if text.find(". ", middle) > 0 else middle
    sample = Sample(
        "demo",
        "demo",
        text[:cut] + NEEDLE + " " + text[cut:],
        question="What is the special magic number mentioned in the text?",
        answer_prefix="The special magic number mentioned in the text is",
    )
    head, tail = split_prompt(loaded.tokenizer, sample, query_aware=True)
    table = Table()
    for column in ("cache", "answer", "cache bytes", "kept", "prefill", "decode/token"):
        table.add_column(column)
    full_bytes = 0
    presses = (press_from(method, ratio=r, tokenizer=loaded.tokenizer) for r in (0.0, ratio))
    for label, press in zip(("full", method), presses, strict=True):
        context = compress_context(loaded.model, torch.tensor([head], device=loaded.model.device), press)
        result = answer(loaded.model, context, torch.tensor([tail], device=loaded.model.device), max_new_tokens=9)
        stored = cache_bytes(context.cache)
        full_bytes = full_bytes or stored
        table.add_row(
            label,
            loaded.tokenizer.decode(result.ids[0], skip_special_tokens=True).strip(),
            f"{stored / 2**20:.2f} MiB",
            f"{stored / full_bytes:.0%}",
            f"{context.prefill_seconds:.2f} s",
            f"{result.decode_seconds_per_token * 1000:.0f} ms",
        )
    out.print(table)
    out.print(
        f"[bold]What happened:[/bold] the {len(head):,}-token context (with a needle) was prefilled once per row; "
        f"{method} kept {1 - ratio:.0%} of every layer's KV cache (the keys least like the average key, per head) "
        "and the answer was decoded from that smaller cache; the bytes are the real storage of the cache."
    )
