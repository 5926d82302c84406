"""What one benchmark run covers: the same field names for every target (``tokensift bench kv|text|encoder``).

A field left ``None`` takes the target's default (its benchmark class says which). ``ratios`` are always
the fraction of tokens removed; each row stores the ratio it ran at. Target configs add their own fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class BenchConfig:
    """Tasks x methods x ratios on one model, ``samples`` per cell, rows in ``out`` (resumed when present)."""

    out: Path
    model: str | None = None
    tasks: tuple[str, ...] | None = None
    methods: tuple[str, ...] | None = None
    """Method names or compositions (``adakv:kvzip``); default: every registered method of the target."""
    ratios: tuple[float, ...] | None = None
    samples: int | None = None
    seed: int = 0
    data_dir: Path | None = None
    cache_dir: Path | None = None
    peers: tuple[str, ...] = ()
    results: Path | None = None
    """Also write the report page here (plots linked relative to it)."""
    report_only: bool = False
    """Write the report from the rows stored so far; compute nothing."""
    command: str | None = None
    """The command shown at the top of the report (default: rebuilt from this config)."""
