"""The evaluation data every benchmark reads, found by one policy and loaded by one loader per file.

Folder: ``--data-dir``, else ``$TOKENSIFT_DATA``, else ``../shared/data`` when it exists (looked up from the
working directory and from the source checkout). A benchmark without data stops with an error naming the
option and the variable; a missing file names itself. Files (origins in the folder's ``SOURCES.md``):
NaturalQuestions-Open and KV retrieval (Liu et al., 2023, "Lost in the Middle"), WikiText-2 raw test
(Merity et al., 2016), Paul Graham essays (the NIAH haystack), GSM8K (Cobbe et al., 2021) with the
chain-of-thought-hub prompt. Standard library only, so peers in their own environments build the same samples.
"""

from __future__ import annotations

import gzip
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from tokensift.errors import InputFileError

DATA_ENV = "TOKENSIFT_DATA"
HINT = f"pass --data-dir DIR or set ${DATA_ENV} (the files are listed in ../shared/data/SOURCES.md)"


def find_data_dir(override: str | os.PathLike[str] | None = None) -> Path | None:
    """The evaluation-data folder: ``override``, ``$TOKENSIFT_DATA``, or ``../shared/data`` if it exists; None
    when there is none (a given folder that does not exist is an error)."""
    if override is not None:
        folder = Path(override).expanduser()
        if not folder.is_dir():
            raise InputFileError(f"--data-dir {folder} is not a directory")
        return folder
    env = os.environ.get(DATA_ENV)
    if env:
        folder = Path(env).expanduser()
        if not folder.is_dir():
            raise InputFileError(f"${DATA_ENV} points to {folder}, which is not a directory")
        return folder
    checkout = Path(__file__).resolve().parents[3]  # src/tokensift/bench/data.py -> repository root
    for candidate in (Path.cwd().parent / "shared" / "data", checkout.parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return None


def require_data_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """:func:`find_data_dir`, or an :class:`InputFileError` saying how to point at the data."""
    folder = find_data_dir(override)
    if folder is None:
        raise InputFileError(f"no evaluation data found: {HINT}")
    return folder


def data_file(folder: Path, *parts: str) -> Path:
    """``folder/parts…``, which must exist."""
    path = folder.joinpath(*parts)
    if not path.exists():
        raise InputFileError(f"benchmark data {path} is missing: {HINT}")
    return path


@cache
def _text(path: Path) -> str:
    if path.suffix == ".gz":
        return gzip.decompress(path.read_bytes()).decode("utf-8")
    return path.read_text(encoding="utf-8")


@cache
def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _text(path).splitlines() if line.strip()]


def nq_open(folder: Path) -> list[dict[str, Any]]:
    """NaturalQuestions-Open with gold passages: ``question``, ``answers``, ``ctxs`` (the gold passage first).

    The loaders of JSON lines return one shared (cached) list: read it, do not change it."""
    return _jsonl(data_file(folder, "lost_in_the_middle", "nq-open-oracle.jsonl.gz"))


def kv_retrieval(folder: Path) -> list[dict[str, Any]]:
    """JSON key-value retrieval tasks: ``ordered_kv_records``, ``key``, ``value``."""
    return _jsonl(data_file(folder, "lost_in_the_middle", "kv-retrieval-75_keys.jsonl.gz"))


def wikitext(folder: Path) -> str:
    """WikiText-2 raw test split, as written (CRLF line ends)."""
    return _text(data_file(folder, "wikitext2", "wiki.test.raw"))


def essays(folder: Path) -> list[str]:
    """The Paul Graham essays, sorted by file name."""
    paths = sorted(data_file(folder, "pg_essays").glob("*.txt"))
    if not paths:
        raise InputFileError(f"benchmark data {folder / 'pg_essays'} holds no essays: {HINT}")
    return [_text(path) for path in paths]


def gsm8k(folder: Path, split: str = "test") -> list[dict[str, Any]]:
    """GSM8K problems of ``split`` (``test`` or ``train``): ``question``, ``answer`` (ending ``#### N``)."""
    return _jsonl(data_file(folder, "gsm8k", f"{split}.jsonl"))


def gsm8k_cot_prompt(folder: Path) -> str:
    """The 8-shot chain-of-thought prompt (chain-of-thought-hub's ``prompt_hardest.txt``)."""
    return _text(data_file(folder, "gsm8k", "prompt_hardest.txt")).strip()
