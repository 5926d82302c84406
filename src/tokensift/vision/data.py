"""easy-VQA (Kanakia, 2020; PyPI ``easy-vqa``, MIT): 64x64 images of one coloured shape, 13 one-word answers.

Read straight from the installed wheel's files (its own loader is a thin JSON reader), so the benchmark and
the projector's training see the same questions in the same order.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tokensift.errors import ModelNotInstalledError

INSTALL = "pip install --no-deps easy-vqa"


@dataclass(frozen=True)
class Question:
    """One easy-VQA question about one image."""

    text: str
    answer: str
    image_id: int
    image: Path


def _root() -> Path:
    found = importlib.util.find_spec("easy_vqa")
    if found is None or not found.submodule_search_locations:
        raise ModelNotInstalledError(f"easy-VQA is not installed; install it with: {INSTALL}")
    return Path(next(iter(found.submodule_search_locations))) / "data"


@cache
def questions(split: str) -> tuple[Question, ...]:
    """Every question of ``split`` ("train": 38,575; "test": 9,673) in the file's order."""
    if split not in ("train", "test"):
        raise ValueError(f"easy-VQA has the splits 'train' and 'test', not {split!r}")
    folder = _root() / split
    rows = json.loads((folder / "questions.json").read_text())
    return tuple(Question(text, answer, int(image), folder / "images" / f"{image}.png") for text, answer, image in rows)


@cache
def answers() -> tuple[str, ...]:
    """The 13 answers."""
    return tuple(line.strip() for line in (_root() / "answers.txt").read_text().splitlines() if line.strip())


def images(split: str) -> dict[int, Path]:
    """Image id -> file of ``split``, in id order."""
    found = {q.image_id: q.image for q in questions(split)}
    return dict(sorted(found.items()))
