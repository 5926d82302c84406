"""Resumable JSONL storage of benchmark rows: one line per sample x method x budget."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

KEY_FIELDS = ("system", "target", "model", "task", "mode", "method", "ratio", "sample_id")
"""Fields that identify a row; every row must have them (``mode`` may be ``"-"`` where a task has none)."""


def _key(values: dict[str, Any]) -> tuple[Any, ...]:
    missing = [f for f in KEY_FIELDS if f not in values]
    if missing:
        raise ValueError(f"benchmark row lacks key field(s) {missing}")
    return tuple(round(float(values[f]), 6) if f == "ratio" else values[f] for f in KEY_FIELDS)


class RowStore:
    """Rows of one benchmark run in ``out_dir/rows.jsonl``.

    Rows already on disk are loaded on creation, so ``has(...)`` lets a resumed run skip finished work.
    A last line cut short by a killed run is dropped (and reported); every append is flushed and synced.
    """

    def __init__(self, out_dir: str | os.PathLike[str], filename: str = "rows.jsonl") -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / filename
        self._rows: list[dict[str, Any]] = []
        self._keys: set[tuple[Any, ...]] = set()
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        good = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                if number != len(lines):
                    raise ValueError(f"{self.path}:{number} is not valid JSON; fix or remove that line") from None
                print(f"tokensift: dropping an incomplete last row in {self.path}", file=sys.stderr)
                continue
            good.append(line)
            self._remember(row)
        if len(good) != sum(1 for line in lines if line.strip()):
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(f"{line}\n" for line in good), encoding="utf-8")
            os.replace(tmp, self.path)

    def _remember(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        self._keys.add(_key(row))

    def has(self, **key: Any) -> bool:
        """Whether a row with these key fields is stored already."""
        return _key(key) in self._keys

    def append(self, row: dict[str, Any]) -> bool:
        """Store one finished row (NaN/inf become null so the file stays valid JSON); a row whose key is
        stored already is not written again (a resumed run may redo work it shares with stored rows).
        Returns whether the row was written."""
        if _key(row) in self._keys:
            return False
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
        line = json.dumps(clean, ensure_ascii=False, sort_keys=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self._remember(clean)
        return True

    def rows(self) -> list[dict[str, Any]]:
        """All stored rows, in the order they were written."""
        return list(self._rows)
