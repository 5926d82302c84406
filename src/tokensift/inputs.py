"""Reading user input: a file path or ``-`` for stdin (strictly UTF-8, never empty), comma-separated lists and
``key=value`` method options. Every problem is a typed error naming what was wrong."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tokensift.errors import EmptyInputError, InputEncodingError, InputFileError, ParameterError


def decode_utf8(raw: bytes, source: str) -> str:
    """Decode ``raw`` as UTF-8 (a BOM is dropped); invalid bytes raise :class:`InputEncodingError`."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputEncodingError(
            f"{source} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "convert it first, e.g. with iconv -t UTF-8"
        ) from None


def read_text(path: str | os.PathLike[str], *, allow_empty: bool = False) -> str:
    """Read a UTF-8 text file, or stdin when ``path`` is ``-``. Line ends are kept as they are."""
    if str(path) == "-":
        raw, source = sys.stdin.buffer.read(), "standard input"
    else:
        file = Path(path)
        source = f"'{file}'"
        if not file.exists():
            raise InputFileError(f"file not found: {file}")
        if file.is_dir():
            raise InputFileError(f"{file} is a directory, not a text file")
        try:
            raw = file.read_bytes()
        except OSError as exc:
            raise InputFileError(f"cannot read {file}: {exc.strerror}") from None
    text = decode_utf8(raw, source)
    if not allow_empty and not text.strip():
        raise EmptyInputError(f"{source} is empty: there is no text to work on")
    return text


def whole_number(value: object, name: str, *, low: int = 1, high: int | None = None, label: str | None = None) -> int:
    """``value`` if it is a whole number (not a bool) from ``low`` (to ``high``); else a :class:`ParameterError`
    naming ``name`` (the message says ``label`` when given)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = ">= 0" if low == 0 else f"of at least {low}"
        if high is not None:
            bound = f"from {low} to {high:,}"
        raise ParameterError(f"{label or name} must be a whole number {bound}, got {value!r}", option=name)
    return value


def parse_list(text: str | None, kind: Callable[[str], Any] = str, *, option: str) -> tuple[Any, ...] | None:
    """``"a,b"`` -> ``("a", "b")`` (items converted by ``kind``); None stays None; an empty or unreadable list is
    a :class:`ParameterError` naming ``--option``."""
    if text is None:
        return None
    try:
        items = tuple(kind(part.strip()) for part in text.split(",") if part.strip())
    except ValueError:
        name = getattr(kind, "__name__", "value")
        raise ParameterError(
            f"--{option} expects a comma-separated list of {name}, got {text!r}", option=option
        ) from None
    if not items:
        raise ParameterError(f"--{option} is empty", option=option)
    return items


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``key=value`` method options (``--option``); values are read as JSON when they parse (numbers, booleans)."""
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ParameterError(f"--option expects key=value, got {pair!r}", option="option")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_bytes(value: str, name: str) -> int:
    """A byte count such as ``1GiB``, ``512MiB``, ``2e9`` or ``1000000`` (at least 1)."""
    import re

    found = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
    unit = found.group(2).lower() if found else ""
    if found is None or unit not in _UNITS:
        raise ParameterError(
            f"--{name.replace('_', '-')} takes a size such as 1GiB or 512MiB, got {value!r}", option=name
        )
    count = int(float(found.group(1)) * _UNITS[unit])
    if count < 1:
        raise ParameterError(f"--{name.replace('_', '-')} must be at least 1 byte, got {value!r}", option=name)
    return count
