"""``tokensift inspect``: how informative is each token of a text to a language model?

Each token gets its surprisal and the entropy of the prediction it answered (see
:mod:`tokensift.scores.lm`). Tokens whose surprisal stands out within the sequence are *flagged* —
above a quantile of the sequence's own surprisals, or above a z-score — following the event-flagging
idea of "Quantifying surprise in clinical care" (2025): the same rule finds the odd event in a log
written one event per line, which the per-line summary ranks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from tokensift.errors import EmptyInputError, ParameterError
from tokensift.scores.lm import lm_scores


@dataclass
class TokenRecord:
    """One token: its text and character span in the input, scores in nats (None = not scored)."""

    index: int
    id: int
    text: str
    start: int
    end: int
    surprisal: float | None
    entropy: float | None
    flagged: bool


@dataclass
class LineRecord:
    """One input line's surprisal summary (lines without scored tokens are left out)."""

    line: int
    text: str
    tokens: int
    mean_surprisal: float
    max_surprisal: float
    flagged_tokens: int
    rank: int = 0


@dataclass
class FlagRule:
    """Flag tokens above the ``quantile`` of the sequence's surprisals, or above mean + ``zscore`` * std."""

    quantile: float | None = 0.95
    zscore: float | None = None

    def __post_init__(self) -> None:
        if self.zscore is not None:
            if not math.isfinite(self.zscore):
                raise ParameterError(f"zscore must be a finite number, got {self.zscore}", option="zscore")
            self.quantile = None
        elif self.quantile is None or not 0.0 < self.quantile < 1.0:
            raise ParameterError(f"quantile must be strictly between 0 and 1, got {self.quantile}", option="quantile")

    def threshold(self, values: torch.Tensor) -> float:
        """The surprisal above which a token is flagged, for these scored values."""
        if values.numel() == 0:
            return math.inf
        if self.zscore is not None:
            std = values.std(unbiased=False) if values.numel() > 1 else torch.tensor(0.0)
            return float(values.mean() + self.zscore * std)
        assert self.quantile is not None
        return float(torch.quantile(values, self.quantile))

    def describe(self) -> str:
        return f"z-score > {self.zscore:g}" if self.zscore is not None else f"above quantile {self.quantile:g}"


@dataclass
class Inspection:
    """Result of :func:`inspect_text`; :meth:`as_dict` is the ``--json`` document."""

    model: str
    text: str
    tokens: list[TokenRecord]
    perplexity: float
    threshold: float
    rule: FlagRule
    windows: list[tuple[int, int, int]]
    total_tokens: int
    seconds: float
    lines: list[LineRecord] = field(default_factory=list)

    @property
    def scored(self) -> list[TokenRecord]:
        return [t for t in self.tokens if t.surprisal is not None]

    @property
    def truncated(self) -> bool:
        return len(self.tokens) < self.total_tokens

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "units": "nats",
            "tokens_in_input": self.total_tokens,
            "tokens_scored": len(self.scored),
            "truncated": self.truncated,
            "perplexity": self.perplexity,
            "flag_rule": {"quantile": self.rule.quantile, "zscore": self.rule.zscore, "threshold": self.threshold},
            "windows": [{"start": a, "stop": b, "scored_from": c} for a, b, c in self.windows],
            "seconds": round(self.seconds, 3),
            "tokens": [asdict(t) for t in self.tokens],
            "lines": [asdict(line) for line in self.lines],
        }


def _line_summary(text: str, tokens: list[TokenRecord]) -> list[LineRecord]:
    """Mean/max surprisal per input line (tokens belong to the line holding their first character;
    whitespace-only tokens are ignored), ranked by mean surprisal, highest first."""
    starts = [0]
    starts += [i + 1 for i, ch in enumerate(text) if ch == "\n"]
    by_line: dict[int, list[TokenRecord]] = {}
    line = 0
    for token in tokens:
        while line + 1 < len(starts) and starts[line + 1] <= token.start:
            line += 1
        if token.surprisal is not None and token.text.strip():
            by_line.setdefault(line, []).append(token)
    records = []
    for number, members in by_line.items():
        stop = starts[number + 1] - 1 if number + 1 < len(starts) else len(text)
        values = [t.surprisal for t in members if t.surprisal is not None]
        records.append(
            LineRecord(
                line=number + 1,
                text=text[starts[number] : stop].rstrip("\r"),
                tokens=len(values),
                mean_surprisal=sum(values) / len(values),
                max_surprisal=max(values),
                flagged_tokens=sum(t.flagged for t in members),
            )
        )
    for rank, record in enumerate(sorted(records, key=lambda r: -r.mean_surprisal), 1):
        record.rank = rank
    return records


def inspect_text(
    text: str,
    model: Any,
    tokenizer: Any,
    *,
    model_name: str = "model",
    prefix_id: int | None = None,
    rule: FlagRule | None = None,
    window: int | None = None,
    stride: int | None = None,
    max_tokens: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Inspection:
    """Score every token of ``text`` and flag the surprising ones.

    ``max_tokens`` scores only the first N tokens (reported as truncated, never silent); texts longer
    than ``window`` (default: the model's context) are scored in overlapping windows.
    """
    if not text.strip():
        raise EmptyInputError("the input is empty: there is no text to inspect")
    if max_tokens is not None and max_tokens < 1:
        raise ParameterError(f"max_tokens must be at least 1, got {max_tokens}")
    rule = rule or FlagRule()
    start_time = time.perf_counter()
    encoding = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    ids = list(encoding["input_ids"])
    offsets = list(encoding["offset_mapping"])
    total = len(ids)
    if max_tokens is not None:
        ids, offsets = ids[:max_tokens], offsets[:max_tokens]
    scores = lm_scores(model, torch.tensor(ids), window=window, stride=stride, prefix_id=prefix_id, progress=progress)
    valid = scores.surprisal[~torch.isnan(scores.surprisal)]
    threshold = rule.threshold(valid)
    records = []
    for index, (token_id, (begin, end)) in enumerate(zip(ids, offsets, strict=True)):
        s, e = float(scores.surprisal[index]), float(scores.entropy[index])
        scored = not math.isnan(s)
        records.append(
            TokenRecord(
                index=index,
                id=int(token_id),
                text=text[begin:end],
                start=int(begin),
                end=int(end),
                surprisal=s if scored else None,
                entropy=e if scored else None,
                flagged=scored and s > threshold,
            )
        )
    return Inspection(
        model=model_name,
        text=text,
        tokens=records,
        perplexity=scores.perplexity,
        threshold=threshold,
        rule=rule,
        windows=scores.windows,
        total_tokens=total,
        seconds=time.perf_counter() - start_time,
        lines=_line_summary(text, records),
    )
