"""``tokensift.kv.compress``: compress every prefill inside a ``with`` block, with a press named or given."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from tokensift.kv.attach import PrefillPolicy, Session, attached
from tokensift.kv.press import Press
from tokensift.methods import accepts, resolve


def press_from(
    method: str | Press,
    *,
    ratio: float | None = None,
    keep: float | None = None,
    keep_tokens: int | None = None,
    tokenizer: Any = None,
    **options: Any,
) -> Press:
    """A press: ``method`` itself, or the registered method or composition (``"adakv:keydiff"``) it names.

    The budget (``ratio`` removed, ``keep`` kept, ``keep_tokens`` absolute) goes to the press that scores;
    ``tokenizer`` reaches only presses that write probe prompts (KVzip); ``options`` go to the part of the
    composition that declares them (``"snapkv.window"`` names the part).
    """
    if isinstance(method, str) and tokenizer is not None and accepts("kv", method, "tokenizer"):
        options["tokenizer"] = tokenizer
    press: Press = resolve("kv", method, ratio=ratio, keep=keep, keep_tokens=keep_tokens, **options)
    return press


@contextlib.contextmanager
def compress(
    model: torch.nn.Module,
    method: str | Press = "snapkv",
    *,
    ratio: float | None = None,
    keep: float | None = None,
    keep_tokens: int | None = None,
    tokenizer: Any = None,
    **options: Any,
) -> Iterator[Session]:
    """Compress every prefill inside the block with ``method`` (a registered name, a composition or a press).

    ``ratio`` is the fraction of tokens removed (kvpress's convention), ``keep`` the fraction kept,
    ``keep_tokens`` an absolute budget per head; ``tokenizer`` is needed by presses that write a probe prompt
    (KVzip). The yielded :class:`~tokensift.kv.attach.Session` carries the accounting (``session.stats``).
    Same as ``with press(model):`` for a press object.
    """
    press = press_from(method, ratio=ratio, keep=keep, keep_tokens=keep_tokens, tokenizer=tokenizer, **options)
    with attached(model, PrefillPolicy(press)) as session:
        yield session
