"""``tokensift.text.compress``: shorten a prompt to an exact token budget on a target tokenizer.

The input is a text, a list of documents, or a chat (a list of ``{"role", "content"}`` messages; roles
are never dropped, and ``turn_decay < 1`` compresses older turns harder). The scoring model reads the
input; the budget is counted on ``target_tokenizer`` (default: the scoring model's). The budget follows
the convention of every target: ``ratio`` removed, ``keep`` kept, ``keep_tokens`` absolute; ``rate`` is
accepted as an alias of ``keep`` for LLMLingua users.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from tokensift.errors import EmptyInputError, InputError, ParameterError
from tokensift.methods import resolve
from tokensift.select import Budget
from tokensift.text.budget import BudgetFitter, Selection, TokenCounter, count_parts
from tokensift.text.methods.base import Job, Prepared, TextMethod
from tokensift.text.scoring import Scorer
from tokensift.text.units import Granularity, Protect, Segmented, segment

Prompt = str | Sequence[str] | Sequence[Mapping[str, str]]
Shape = Literal["text", "documents", "chat"]
DEFAULT_METHOD = "llmlingua"


@dataclass
class UnitRecord:
    """One unit of the input: its text, which part it is in, whether it was kept and its method score."""

    text: str
    part: int
    kind: str
    kept: bool
    score: float | None


@dataclass
class Compression:
    """What :func:`compress` returns; ``compressed`` has the input's shape (text, documents or chat)."""

    compressed: str | list[str] | list[dict[str, str]]
    method: str
    tokenizer: str
    tokens_before: int
    tokens_after: int
    keep_tokens: int
    """The budget in tokens of the target tokenizer (never exceeded)."""
    budget: Budget
    """The budget as requested."""
    units: list[UnitRecord]
    seconds: dict[str, float]
    notes: list[str] = field(default_factory=list)

    @property
    def kept_fraction(self) -> float:
        """Achieved: tokens after / tokens before on the target tokenizer."""
        return self.tokens_after / self.tokens_before if self.tokens_before else 1.0

    @property
    def rate(self) -> float:
        """LLMLingua's name for :attr:`kept_fraction`."""
        return self.kept_fraction

    @property
    def text(self) -> str:
        """The compressed prompt as one string (documents joined by a blank line, chat as ``role: content``)."""
        if isinstance(self.compressed, str):
            return self.compressed
        return "\n\n".join(f"{m['role']}: {m['content']}" if isinstance(m, dict) else m for m in self.compressed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "compressed": self.compressed,
            "method": self.method,
            "tokenizer": self.tokenizer,
            "tokens_before": self.tokens_before,
            "tokens_after": self.tokens_after,
            "keep_tokens": self.keep_tokens,
            "requested": self.budget.describe(),
            "kept_fraction": self.kept_fraction,
            "seconds": self.seconds,
            "notes": self.notes,
            "units": [vars(u) for u in self.units],
        }


@dataclass
class Input:
    """A prompt normalized to parts: ``shape`` says how to rebuild it, ``roles`` are the chat roles."""

    parts: list[str]
    shape: Shape
    roles: list[str] | None = None


def normalize(prompt: Prompt) -> Input:
    """Check the prompt's shape; typed errors for empty or malformed input."""
    if isinstance(prompt, str):
        found = Input([prompt], "text")
    elif isinstance(prompt, Sequence) and prompt and all(isinstance(p, str) for p in prompt):
        found = Input([str(p) for p in prompt], "documents")
    elif isinstance(prompt, Sequence) and prompt and all(isinstance(p, Mapping) for p in prompt):
        roles, parts = [], []
        for number, message in enumerate(prompt):
            assert isinstance(message, Mapping)
            if not isinstance(message.get("role"), str) or not isinstance(message.get("content"), str):
                raise InputError(f"chat message {number} needs string 'role' and 'content' fields")
            roles.append(message["role"])
            parts.append(message["content"])
        found = Input(parts, "chat", roles)
    elif isinstance(prompt, Sequence) and not prompt:
        raise EmptyInputError("the prompt is an empty list: there is no text to compress")
    else:
        raise InputError("the prompt must be a string, a list of strings or a list of {'role', 'content'} messages")
    if not any(p.strip() for p in found.parts):
        raise EmptyInputError("the prompt is empty: there is no text to compress")
    return found


def make_budget(
    ratio: float | None = None, keep: float | None = None, keep_tokens: int | None = None, rate: float | None = None
) -> Budget:
    """Exactly one of ``ratio`` (removed, [0, 1)), ``keep`` (kept, (0, 1]), ``keep_tokens`` (>= 1) or ``rate``
    (LLMLingua's name for ``keep``)."""
    if rate is not None:
        if keep is not None:
            raise ParameterError("rate is another name for keep: give one of them", option="rate")
        try:
            return make_budget(ratio, rate, keep_tokens)
        except ParameterError as exc:
            raise ParameterError(str(exc).replace("keep", "rate", 1), option="rate") from None
    budget = Budget(ratio, keep, keep_tokens)
    if ratio is None and keep is None and keep_tokens is None:
        raise ParameterError("give a budget: one of ratio, keep (or rate) and keep_tokens", option="ratio")
    return budget


def budget_tokens(tokens_before: int, budget: Budget) -> int:
    """The budget in tokens (at least 1; an absolute budget above the input keeps it whole)."""
    if budget.keep_tokens is not None:
        return int(budget.keep_tokens)
    return budget.tokens(tokens_before)


@lru_cache(maxsize=4)
def _embedded_scorer(name: str) -> Scorer:
    from tokensift.models import load_model, prefix_token_id

    loaded = load_model(name)
    return Scorer(loaded.model, loaded.tokenizer, prefix_token_id(loaded.tokenizer, loaded.spec), loaded.name)


def resolve_scorer(model: str | os.PathLike[str] | Scorer | Any) -> Scorer:
    """A :class:`Scorer` from an embedded model name, a local folder, a loaded model or a Scorer."""
    if isinstance(model, Scorer):
        return model
    if isinstance(model, str | os.PathLike):
        return _embedded_scorer(str(model))
    from tokensift.models import prefix_token_id

    return Scorer(model.model, model.tokenizer, prefix_token_id(model.tokenizer, model.spec), model.name)


def resolve_counter(target_tokenizer: str | os.PathLike[str] | Any | None, scorer: Scorer) -> TokenCounter:
    """Token counting on the target tokenizer: a local HF folder, a tokenizer object, or the scorer's."""
    if target_tokenizer is None:
        return TokenCounter(scorer.tokenizer, scorer.name)
    if isinstance(target_tokenizer, str | os.PathLike):
        from transformers import AutoTokenizer

        path = os.fspath(target_tokenizer)
        if not os.path.isdir(path):
            raise ParameterError(f"target tokenizer {path!r} is not a local tokenizer folder")
        try:
            return TokenCounter(AutoTokenizer.from_pretrained(path, local_files_only=True), path)
        except (OSError, ValueError) as exc:
            raise ParameterError(f"cannot load a tokenizer from {path}: {exc}") from None
    if not callable(target_tokenizer):
        raise ParameterError(
            f"target_tokenizer must be a tokenizer or a local tokenizer folder, got {target_tokenizer!r}",
            option="target_tokenizer",
        )
    return TokenCounter(target_tokenizer)


def _protect(protect: Protect | Sequence[str] | None) -> Protect:
    if protect is None:
        return Protect()
    if isinstance(protect, Protect):
        return protect
    if isinstance(protect, str) or not isinstance(protect, Sequence) or not all(isinstance(p, str) for p in protect):
        raise ParameterError(f"protect must be a Protect or a list of regexes, got {protect!r}", option="protect")
    return Protect(patterns=tuple(protect))


class Compressor:
    """One method, scoring model and target tokenizer; :meth:`prepare` once, :meth:`compress` per budget."""

    def __init__(
        self,
        method: str | TextMethod = DEFAULT_METHOD,
        *,
        model: str | os.PathLike[str] | Scorer | Any = "smollm2-135m",
        target_tokenizer: str | os.PathLike[str] | Any | None = None,
        protect: Protect | Sequence[str] | None = None,
        options: Mapping[str, Any] | None = None,
        turn_decay: float = 1.0,
        units: Granularity = "word",
    ) -> None:
        if isinstance(turn_decay, bool) or not isinstance(turn_decay, int | float) or not 0.0 < turn_decay <= 1.0:
            raise ParameterError(f"turn_decay must be in (0, 1], got {turn_decay!r}", option="turn_decay")
        if options is not None and not isinstance(options, Mapping):
            raise ParameterError(f"options must be a mapping of method options, got {options!r}", option="options")
        self.method: TextMethod = resolve("text", method, **dict(options or {}))
        self.method.load()
        self.name = self.method.spec()
        self.scorer = resolve_scorer(model)
        self.counter = resolve_counter(target_tokenizer, self.scorer)
        self.protect = _protect(protect)
        self.turn_decay = turn_decay
        if units not in ("word", "phrase", "sentence"):
            raise ParameterError(f"units must be word, phrase or sentence, got {units!r}", option="units")
        self.units: Granularity = units

    def prepare(self, prompt: Prompt, question: str | None = None) -> PreparedPrompt:
        """Segment and score ``prompt`` (no budget yet)."""
        start = time.perf_counter()
        shaped = normalize(prompt)
        segmented = segment(shaped.parts, self.protect, self.units)
        fitter = BudgetFitter(segmented, self.counter)
        job = Job(segmented, fitter, self.scorer if self.method.uses_model() else None, question or None)
        tokens_before = count_parts(self.counter, segmented.parts)
        split_seconds = time.perf_counter() - start
        return PreparedPrompt(shaped, job, tokens_before, split_seconds)

    def compress(
        self,
        prepared: PreparedPrompt,
        *,
        ratio: float | None = None,
        keep: float | None = None,
        keep_tokens: int | None = None,
        rate: float | None = None,
    ) -> Compression:
        """Compress a prepared prompt to one budget: ``ratio`` removed, ``keep`` (or ``rate``) kept, ``keep_tokens``."""
        budget = make_budget(ratio, keep, keep_tokens, rate)
        tokens = budget_tokens(prepared.tokens_before, budget)
        job, shaped = prepared.job, prepared.shaped
        if tokens >= prepared.tokens_before:
            kept = [True] * len(job.segmented.units)
            note = f"budget of {tokens} tokens >= the input's {prepared.tokens_before}: returned unchanged"
            unchanged = Selection(kept, prepared.tokens_before, list(job.segmented.parts))
            return self._result(prepared, unchanged, tokens, budget, None, {"score": 0.0, "select": 0.0}, [note])
        job.fitter.check(tokens)  # fail fast, before any model work
        if prepared.scores is None:
            start = time.perf_counter()
            prepared.scores = self._decayed(self.method.prepare(job), job.segmented, shaped)
            prepared.score_seconds = time.perf_counter() - start
        start = time.perf_counter()
        selection = self.method.choose(job, prepared.scores, tokens)
        seconds = {"score": prepared.score_seconds, "select": time.perf_counter() - start + prepared.split_seconds}
        return self._result(prepared, selection, tokens, budget, prepared.scores, seconds, [])

    def _decayed(self, scores: Prepared, segmented: Segmented, shaped: Input) -> Prepared:
        """Older chat turns' values made worse by ``turn_decay ** age`` (age 0 = the last message)."""
        if shaped.shape != "chat" or self.turn_decay == 1.0:
            return scores
        last = len(shaped.parts) - 1
        for i, unit in enumerate(segmented.units):
            weight = self.turn_decay ** (last - unit.part)
            value = scores.values[i]
            scores.values[i] = value * weight if value >= 0 else value / weight
        return scores

    def _result(
        self,
        prepared: PreparedPrompt,
        selection: Selection,
        tokens: int,
        budget: Budget,
        scores: Prepared | None,
        seconds: dict[str, float],
        notes: list[str],
    ) -> Compression:
        shaped, segmented = prepared.shaped, prepared.job.segmented
        order = selection.order or list(range(len(selection.texts)))
        texts = [selection.texts[k] for k in order]
        compressed: str | list[str] | list[dict[str, str]]
        if shaped.shape == "text":
            compressed = texts[0]
        elif shaped.shape == "documents":
            compressed = texts
        else:
            assert shaped.roles is not None
            compressed = [{"role": shaped.roles[k], "content": selection.texts[k]} for k in order]
        units = [
            UnitRecord(u.text, u.part, u.kind, selection.keep[i], None if scores is None else scores.values[i])
            for i, u in enumerate(segmented.units)
        ]
        seconds = {**seconds, "total": sum(seconds.values())}
        return Compression(
            compressed,
            self.name,
            self.counter.name,
            prepared.tokens_before,
            selection.tokens,
            tokens,
            budget,
            units,
            seconds,
            notes,
        )


@dataclass
class PreparedPrompt:
    """A prompt ready to compress: its shape, the job, its size and (once computed) the method's scores."""

    shaped: Input
    job: Job
    tokens_before: int
    split_seconds: float
    scores: Prepared | None = None
    score_seconds: float = 0.0


def compress(
    prompt: Prompt,
    *,
    ratio: float | None = None,
    keep: float | None = None,
    keep_tokens: int | None = None,
    rate: float | None = None,
    question: str | None = None,
    method: str | TextMethod = DEFAULT_METHOD,
    model: str | os.PathLike[str] | Scorer | Any = "smollm2-135m",
    target_tokenizer: str | os.PathLike[str] | Any | None = None,
    protect: Protect | Sequence[str] | None = None,
    options: Mapping[str, Any] | None = None,
    turn_decay: float = 1.0,
    units: Granularity = "word",
) -> Compression:
    """Compress ``prompt`` to one budget on the target tokenizer: ``ratio`` of its tokens removed, ``keep`` (or
    LLMLingua's ``rate``) kept, or ``keep_tokens`` at most.

    ``protect`` is a :class:`~tokensift.text.units.Protect` or a list of regexes to keep; ``options`` are
    the method's own (e.g. ``{"granularity": "sentence"}`` for selective_context). ``units`` makes every
    method keep or drop whole phrases or sentences (dates, numbers with their scale, names and quotations
    are always whole). The budget is met exactly: never more than ``keep_tokens``, and as close to it as
    whole units allow.
    """
    make_budget(ratio, keep, keep_tokens, rate)  # validate before loading anything
    normalize(prompt)
    compressor = Compressor(
        method,
        model=model,
        target_tokenizer=target_tokenizer,
        protect=protect,
        options=options,
        turn_decay=turn_decay,
        units=units,
    )
    prepared = compressor.prepare(prompt, question)
    return compressor.compress(prepared, ratio=ratio, keep=keep, keep_tokens=keep_tokens, rate=rate)
