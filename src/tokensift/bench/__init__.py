"""The benchmark skeleton shared by every target.

A benchmark is tasks x methods x ratios on one model (:class:`Benchmark`, configured by a
:class:`BenchConfig` with the same field names for every target). Each finished (sample, method, ratio)
is one JSON line in ``rows.jsonl`` (:class:`RowStore`), so an interrupted run resumes where it stopped;
:func:`write_report` turns the rows into ``summary.csv``, PNG plots and ``report.md``. The data every
benchmark reads is found and loaded by :mod:`tokensift.bench.data`.
"""

from tokensift.bench.benchmark import FULL, Benchmark, WorkItem
from tokensift.bench.config import BenchConfig
from tokensift.bench.report import summarize, write_report
from tokensift.bench.store import KEY_FIELDS, RowStore

__all__ = ["FULL", "KEY_FIELDS", "BenchConfig", "Benchmark", "RowStore", "WorkItem", "summarize", "write_report"]
