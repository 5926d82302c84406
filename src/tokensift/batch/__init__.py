"""Batch jobs at corpus scale: a tokensift command over every row of a JSONL or Parquet table.

* :func:`run_batch` — run a :class:`Job` (``InspectJob``, ``EmbedJob``, ``CompressJob``, ``ScoreDataJob``,
  ``KVCompressJob``) over a table into an output table, on a Ray cluster (Ray Data, an actor pool holding the
  model once per actor) or in this process; resumable shard by shard; per-row problems in an ``error`` column.
* ``tokensift batch …`` — the same from the command line (:mod:`tokensift.batch.cli`).

Ray is optional (``pip install 'tokensift[scale]'``); attributes load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_FACE = {
    "run_batch": "tokensift.batch.runner",
    "BatchReport": "tokensift.batch.runner",
    "Job": "tokensift.batch.jobs",
    "InspectJob": "tokensift.batch.jobs",
    "EmbedJob": "tokensift.batch.jobs",
    "CompressJob": "tokensift.batch.jobs",
    "ScoreDataJob": "tokensift.batch.jobs",
    "KVCompressJob": "tokensift.batch.jobs",
    "JOBS": "tokensift.batch.jobs",
}

__all__ = sorted(_FACE)


def __getattr__(name: str) -> Any:
    if name in _FACE:
        return getattr(importlib.import_module(_FACE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
