"""Budgets: how many of ``n`` tokens to keep. One convention for every target.

``ratio`` is the fraction removed (kvpress, ToMe), ``keep`` the fraction kept (LLMLingua's ``rate``),
``keep_tokens`` an absolute count; a :class:`Budget` holds at most one of them (none: keep everything).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real

from tokensift.errors import ParameterError

MAX_TOKENS = 2**40
"""The largest absolute budget accepted (far beyond any context; keeps the arithmetic in range)."""


def _check_fraction(value: object, option: str, *, low_open: bool, high_open: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or math.isnan(float(value)):
        raise ParameterError(f"{option} must be a number, got {value!r}", option=option)
    number = float(value)
    low_bad = number <= 0.0 if low_open else number < 0.0
    high_bad = number >= 1.0 if high_open else number > 1.0
    if low_bad or high_bad:
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise ParameterError(f"{option} must be in {interval}, got {value}", option=option)
    return number


@dataclass(frozen=True)
class Budget:
    """At most one of ``ratio`` (removed, in [0, 1)), ``keep`` (kept, in (0, 1]) and ``keep_tokens`` (>= 1)."""

    ratio: float | None = None
    keep: float | None = None
    keep_tokens: int | None = None

    def __post_init__(self) -> None:
        given = [name for name in ("ratio", "keep", "keep_tokens") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ParameterError(f"give one of ratio, keep and keep_tokens, not {' and '.join(given)}", option=given[1])
        if self.ratio is not None:
            _check_fraction(self.ratio, "ratio", low_open=False, high_open=True)
        if self.keep is not None:
            _check_fraction(self.keep, "keep", low_open=True, high_open=False)
        if self.keep_tokens is not None and (
            isinstance(self.keep_tokens, bool)
            or not isinstance(self.keep_tokens, Integral)
            or not 1 <= self.keep_tokens <= MAX_TOKENS
        ):
            raise ParameterError(
                f"keep_tokens must be a whole number from 1 to {MAX_TOKENS:,}, got {self.keep_tokens!r}",
                option="keep_tokens",
            )

    @property
    def kept_fraction(self) -> float | None:
        """The fraction kept (``None`` for an absolute budget); ``1 - ratio`` rounded so 0.67 removed keeps 0.33."""
        if self.keep is not None:
            return float(self.keep)
        if self.ratio is not None:
            return round(1.0 - float(self.ratio), 12)
        return None if self.keep_tokens is not None else 1.0

    @property
    def active(self) -> bool:
        """False when nothing would be removed (no budget, ratio 0 or keep 1)."""
        return self.keep_tokens is not None or (self.kept_fraction or 1.0) < 1.0

    def tokens(self, n: int, *, floor: int = 1) -> int:
        """Tokens kept of ``n``: ``round(kept_fraction * n)`` (at least ``floor``) or ``keep_tokens``.

        An absolute budget larger than ``n`` raises :class:`ParameterError` (callers that accept it check first).
        """
        if self.keep_tokens is not None:
            if self.keep_tokens > n:
                raise ParameterError(
                    f"budget of {self.keep_tokens} tokens is larger than the input ({n} tokens)", option="keep_tokens"
                )
            return int(self.keep_tokens)
        fraction = self.kept_fraction
        assert fraction is not None
        return min(n, max(floor, round(fraction * n)))

    def describe(self) -> str:
        """``ratio 0.5`` / ``keep 0.33`` / ``keep_tokens 500`` / ``no budget``."""
        for name in ("ratio", "keep", "keep_tokens"):
            value = getattr(self, name)
            if value is not None:
                return f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}"
        return "no budget"
