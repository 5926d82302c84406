"""The benchmark core shared by every target: resumable result rows and the report built from them.

A benchmark is tasks x methods x budgets on one model. Each finished (sample, method, budget) is one
JSON line in ``rows.jsonl`` (:class:`RowStore`), so an interrupted run resumes where it stopped;
:func:`write_report` turns the rows into ``summary.csv``, PNG plots and ``report.md``.
"""

from tokensift.bench.report import summarize, write_report
from tokensift.bench.store import KEY_FIELDS, RowStore

__all__ = ["KEY_FIELDS", "RowStore", "summarize", "write_report"]
