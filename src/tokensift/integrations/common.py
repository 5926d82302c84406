"""What both framework adapters share: one budget, one compressor built lazily, one compression of a
retrieved list of texts (question-aware when the framework gives the query)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tokensift.text.api import Compression, Compressor, make_budget

DEFAULT_KEEP = 0.5


def with_budget(data: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments with one valid budget: ``keep`` 0.5 when none is given; a wrong one raises
    :class:`tokensift.errors.ParameterError`."""
    if all(data.get(k) is None for k in ("ratio", "keep", "keep_tokens")):
        data = {**data, "keep": DEFAULT_KEEP}
    make_budget(data.get("ratio"), data.get("keep"), data.get("keep_tokens"))
    return data


def build(method: str, model: Any, options: Mapping[str, Any] | None, units: str) -> Compressor:
    return Compressor(method, model=model, options=dict(options or {}), units=units)  # type: ignore[arg-type]


def compress_texts(
    compressor: Compressor,
    texts: Sequence[str],
    query: str | None,
    ratio: float | None,
    keep: float | None,
    keep_tokens: int | None,
) -> tuple[list[str], Compression]:
    """The texts compressed together (one budget over all of them), in their order; empty texts stay empty."""
    prepared = compressor.prepare(list(texts), query or None)
    result = compressor.compress(prepared, ratio=ratio, keep=keep, keep_tokens=keep_tokens)
    compressed = result.compressed
    assert isinstance(compressed, list)
    return [str(t) for t in compressed], result


def summary(result: Compression) -> dict[str, Any]:
    """What a compressed document's metadata records about the compression."""
    return {
        "method": result.method,
        "tokens_before": result.tokens_before,
        "tokens_after": result.tokens_after,
        "kept_fraction": round(result.kept_fraction, 4),
    }
