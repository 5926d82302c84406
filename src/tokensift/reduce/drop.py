"""Dropping text units: the kept pieces of a text, joined in their original order."""

from __future__ import annotations

from collections.abc import Sequence


def drop_units(pieces: Sequence[str], keep: Sequence[bool]) -> str:
    """Concatenate the ``pieces`` whose ``keep`` flag is set (each piece carries its own leading space)."""
    if len(pieces) != len(keep):
        raise ValueError(f"{len(pieces)} pieces but {len(keep)} keep flags")
    return "".join(piece for piece, kept in zip(pieces, keep, strict=True) if kept)
