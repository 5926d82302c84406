"""Cut a text into displayable pieces, one per token, that together reproduce it exactly.

Tokenizer offsets can overlap (a byte-level BPE splits one emoji over two tokens) or skip characters;
renderers show each character once, attached to the token that covers it first, and gaps as plain text.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, TypeVar


class Spanned(Protocol):
    start: int
    end: int


T = TypeVar("T", bound=Spanned)


def segments(text: str, tokens: Sequence[T]) -> Iterator[tuple[str, T | None]]:
    """Yield ``(piece, token)`` pairs covering ``text`` in order; ``token`` is None for uncovered gaps."""
    position = 0
    for token in tokens:
        if token.start > position:
            yield text[position : token.start], None
            position = token.start
        if token.end > position:
            yield text[position : token.end], token
            position = token.end
    if position < len(text):
        yield text[position:], None
