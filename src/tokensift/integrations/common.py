"""What both framework adapters share: one budget checked before pydantic sees it, one compressor built
lazily, one compression of a retrieved list of texts (question-aware when the framework gives the query)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tokensift.text.api import Compressor, make_budget

DEFAULT_KEEP = 0.5


class Adapter:
    """Mixed into each framework's pydantic class, which declares the fields ``method``, ``ratio``, ``keep``,
    ``keep_tokens``, ``model``, ``options``, ``units`` and the private ``_compressor``."""

    method: str
    ratio: float | None
    keep: float | None
    keep_tokens: int | None
    model: Any
    options: dict[str, Any]
    units: str
    _compressor: Any

    def __init__(self, **data: Any) -> None:
        # one valid budget (keep 0.5 when none is given), checked here so a bad one is tokensift's
        # ParameterError, not pydantic's ValidationError
        if all(data.get(k) is None for k in ("ratio", "keep", "keep_tokens")):
            data = {**data, "keep": DEFAULT_KEEP}
        make_budget(data.get("ratio"), data.get("keep"), data.get("keep_tokens"))
        super().__init__(**data)

    def compress_texts(self, texts: Sequence[str], query: str | None) -> tuple[list[str], dict[str, Any]]:
        """The texts compressed together (one budget over all of them), in their order (a text the budget
        empties is ""), and what the compressed items' metadata records about the compression."""
        if self._compressor is None:
            self._compressor = Compressor(
                self.method,
                model=self.model,
                options=dict(self.options or {}),
                units=self.units,  # type: ignore[arg-type]  # Compressor checks it
            )
        prepared = self._compressor.prepare(list(texts), query or None)
        result = self._compressor.compress(prepared, ratio=self.ratio, keep=self.keep, keep_tokens=self.keep_tokens)
        assert isinstance(result.compressed, list)
        about = {
            "method": result.method,
            "tokens_before": result.tokens_before,
            "tokens_after": result.tokens_after,
            "kept_fraction": round(result.kept_fraction, 4),
        }
        return [str(t) for t in result.compressed], about
