"""Reading user input: a file path or ``-`` for stdin, strictly UTF-8, never empty."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tokensift.errors import EmptyInputError, InputEncodingError, InputFileError

DATA_ENV = "TOKENSIFT_DATA"


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


def data_dir(override: str | os.PathLike[str] | None = None) -> Path | None:
    """The evaluation-data folder: ``override``, ``$TOKENSIFT_DATA``, or ``../shared/data`` if it exists.

    ``../shared/data`` is looked up from the working directory and from the source checkout.
    Returns ``None`` when no candidate exists (callers fall back to text of their own).
    """
    if override is not None:
        folder = Path(override).expanduser()
        if not folder.is_dir():
            raise InputFileError(f"data directory not found: {folder}")
        return folder
    env = os.environ.get(DATA_ENV)
    if env:
        folder = Path(env).expanduser()
        if not folder.is_dir():
            raise InputFileError(f"${DATA_ENV} points to {folder}, which is not a directory")
        return folder
    checkout = Path(__file__).resolve().parents[2]  # src/tokensift/io.py -> repository root
    for candidate in (Path.cwd().parent / "shared" / "data", checkout.parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return None
