"""What each ``tokensift batch`` command does to a shard of rows: one small job per command.

A job is a picklable dataclass of the command's options. :meth:`Job.load` loads the model once (in each Ray
actor, or once in the process with ``--ray off``); :meth:`Job.run` turns a list of input rows into one result
dict per row: the job's named columns, or an ``error`` saying why that row has none. A row's problem (no text,
null, empty, too long, a malformed example) never fails the job: it is reported in its row. A failure of the
model on a batch is retried row by row, so only the row that causes it carries the error.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tokensift.batch.tables import ERROR, unusable
from tokensift.errors import ParameterError, TokensiftError

Row = dict[str, Any]
Result = dict[str, Any]


def _problem(exc: BaseException) -> str:
    """A row's error text: tokensift's own message, or the exception's type and message."""
    if isinstance(exc, TokensiftError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


@dataclass
class Job:
    """A batch command: options as fields, the result ``columns`` it adds, the model it loads."""

    command: ClassVar[str] = ""
    columns: ClassVar[tuple[str, ...]] = ()
    vectors: ClassVar[tuple[str, ...]] = ()
    """Result columns of float32 vectors (Parquet stores them as lists of float32)."""
    model: str = "smollm2-135m"
    text_field: str = "text"
    max_tokens: int = 4096
    cache_dir: str | None = None
    batch_size: int = 8
    loaded: Any = field(default=None, repr=False, compare=False)

    def load(self) -> None:
        """Load the model (idempotent)."""
        if self.loaded is None:
            from tokensift.models import load_model

            self.loaded = load_model(self.model, cache_dir=self.cache_dir)

    def describe(self) -> dict[str, Any]:
        """The options that decide the results (a resumed job must have the same)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("loaded", "cache_dir", "batch_size")}

    def text(self, row: Row) -> str:
        """The row's text; a ``ValueError`` says why it has none (missing, null, not a string, empty)."""
        if self.text_field not in row:
            raise ValueError(f"no {self.text_field!r} field (choose the column with --text-field)")
        value = row[self.text_field]
        if value is None:
            raise ValueError(f"{self.text_field!r} is null")
        if not isinstance(value, str):
            raise ValueError(f"{self.text_field!r} is a {type(value).__name__}, not a string")
        if not value.strip():
            raise ValueError(f"{self.text_field!r} is empty")
        return value

    def count(self, text: str) -> int:
        """Tokens of ``text``; more than ``max_tokens`` is a ``ValueError`` (the row's error, never a cut)."""
        n = len(self.loaded.tokenizer(text, add_special_tokens=False).input_ids)
        if n > self.max_tokens:
            raise ValueError(f"{n:,} tokens, more than --max-tokens {self.max_tokens:,}")
        return n

    def run(self, rows: list[Row]) -> list[Result]:
        """One result per row, in order (see the module doc)."""
        self.load()
        results: list[Result] = [{} for _ in rows]
        ready: list[tuple[int, Any]] = []
        for i, row in enumerate(rows):
            if unusable(row):
                results[i] = {ERROR: row[ERROR]}
                continue
            try:
                ready.append((i, self.prepare(row)))
            except (ValueError, TokensiftError) as exc:  # what is wrong with the row, said by the job
                results[i] = {ERROR: str(exc)}
            except Exception as exc:  # anything else a row can trigger (a tokenizer failing on it)
                results[i] = {ERROR: _problem(exc)}
        for start in range(0, len(ready), self.batch_size):
            chunk = ready[start : start + self.batch_size]
            try:
                done = self.process([item for _, item in chunk])
            except Exception:  # one bad row must not cost its batch: retry the rows one by one
                done = []
                for _, item in chunk:
                    try:
                        done.extend(self.process([item]))
                    except Exception as exc:
                        done.append({ERROR: _problem(exc)})
            for (i, _), result in zip(chunk, done, strict=True):
                results[i] = result
        return [{**{c: None for c in self.columns}, ERROR: None, **r} for r in results]

    def prepare(self, row: Row) -> Any:
        """What :meth:`process` needs from a row; raise ``ValueError``/:class:`TokensiftError` for a bad row."""
        text = self.text(row)
        self.count(text)
        return text

    def process(self, items: list[Any]) -> list[Result]:
        raise NotImplementedError


@dataclass
class InspectJob(Job):
    """``batch inspect``: each text's per-token surprisal and entropy, perplexity, flagged tokens."""

    command: ClassVar[str] = "inspect"
    columns: ClassVar[tuple[str, ...]] = ("tokens", "surprisal", "entropy", "flagged", "perplexity")
    quantile: float = 0.95
    zscore: float | None = None

    def process(self, items: list[Any]) -> list[Result]:
        from tokensift.inspection import FlagRule, inspect_text
        from tokensift.models import prefix_token_id

        rule = FlagRule(quantile=self.quantile, zscore=self.zscore)
        prefix = prefix_token_id(self.loaded.tokenizer, self.loaded.spec)
        found = []
        for text in items:
            result = inspect_text(
                text, self.loaded.model, self.loaded.tokenizer, model_name=self.loaded.name, prefix_id=prefix, rule=rule
            )
            found.append(
                {
                    "tokens": [t.text for t in result.tokens],
                    "surprisal": [t.surprisal for t in result.tokens],
                    "entropy": [t.entropy for t in result.tokens],
                    "flagged": [t.index for t in result.tokens if t.flagged],
                    "perplexity": result.perplexity,
                }
            )
        return found


@dataclass
class EmbedJob(Job):
    """``batch embed``: sentence embeddings with tokens merged or pruned inside the encoder."""

    command: ClassVar[str] = "embed"
    columns: ClassVar[tuple[str, ...]] = ("embedding", "tokens", "kept_tokens")
    vectors: ClassVar[tuple[str, ...]] = ("embedding",)
    model: str = "minilm-l6"
    method: str = "tome"
    schedule: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    max_tokens: int = 0
    """0: the encoder's own limit (256 for all-MiniLM-L6-v2)."""
    truncate: bool = False
    batch_size: int = 32

    def load(self) -> None:
        if self.loaded is None:
            from tokensift.encoder.embed import max_length_for

            super().load()
            loaded: Any = self.loaded
            self.limit = max_length_for(loaded.tokenizer, loaded.model, loaded.path)
            if self.max_tokens:
                self.limit = min(self.limit, self.max_tokens)

    def prepare(self, row: Row) -> Any:
        text = self.text(row)
        n = len(self.loaded.tokenizer(text, add_special_tokens=True).input_ids)
        if n > self.limit and not self.truncate:
            raise ValueError(f"{n:,} tokens, more than the {self.limit:,} the encoder takes (--truncate cuts)")
        return text

    def process(self, items: list[Any]) -> list[Result]:
        from tokensift.encoder.embed import sentence_embeddings
        from tokensift.encoder.schedule import Schedule
        from tokensift.methods import build

        reduce = any(v is not None for v in self.schedule.values())
        result = sentence_embeddings(
            self.loaded.model,
            self.loaded.tokenizer,
            items,
            method=build("encoder", self.method, **self.options) if reduce else None,
            schedule=Schedule(**self.schedule) if reduce else None,
            batch_size=self.batch_size,
            max_length=self.limit,
            truncate=self.truncate,
        )
        return [
            {"embedding": vector.tolist(), "tokens": int(t), "kept_tokens": int(k)}
            for vector, t, k in zip(result.embeddings, result.tokens, result.kept, strict=True)
        ]


@dataclass
class CompressJob(Job):
    """``batch compress``: each text compressed to an exact token budget by a text method."""

    command: ClassVar[str] = "compress"
    columns: ClassVar[tuple[str, ...]] = ("compressed", "tokens_before", "tokens_after")
    method: str = "llmlingua"
    budget: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    question_field: str | None = None

    def load(self) -> None:
        if self.loaded is None:
            from tokensift.text.api import Compressor

            super().load()
            self.compressor = Compressor(self.method, model=self.loaded, options=self.options)

    def prepare(self, row: Row) -> Any:
        text = self.text(row)
        self.count(text)
        question = None
        if self.question_field is not None:
            question = row.get(self.question_field)
            if question is not None and not isinstance(question, str):
                raise ValueError(f"{self.question_field!r} is a {type(question).__name__}, not a string")
        return text, question or None

    def process(self, items: list[Any]) -> list[Result]:
        found = []
        for text, question in items:
            result = self.compressor.compress(self.compressor.prepare(text, question), **self.budget)
            found.append(
                {
                    "compressed": result.compressed,
                    "tokens_before": result.tokens_before,
                    "tokens_after": result.tokens_after,
                }
            )
        return found


@dataclass
class ScoreDataJob(Job):
    """``batch score-data``: each instruction example's data score (``sifd``/``ifd``) and informative tokens.

    Rows are examples in the shapes ``score-data`` reads (Alpaca, prompt/response, question/answer, chat
    ``messages``), not a text field."""

    command: ClassVar[str] = "score-data"
    columns: ClassVar[tuple[str, ...]] = ("score", "ifd", "response_tokens", "informative")
    method: str = "sifd"
    options: dict[str, Any] = field(default_factory=dict)
    max_tokens: int = 2048

    def load(self) -> None:
        if self.loaded is None:
            from tokensift.methods import build

            super().load()
            self.scorer = build("training", self.method, **self.options)

    def prepare(self, row: Row) -> Any:
        from tokensift.training.examples import encode_example, encode_unconditional, parse_row

        row = {k: v for k, v in row.items() if k != ERROR}
        try:
            example = parse_row(row, 0)
        except TokensiftError as exc:
            raise ValueError(str(exc).removeprefix("line 0: ")) from None
        conditional = encode_example(self.loaded.tokenizer, example)
        if len(conditional.ids) > self.max_tokens:
            raise ValueError(f"{len(conditional.ids):,} tokens, more than --max-tokens {self.max_tokens:,}")
        return conditional, encode_unconditional(self.loaded.tokenizer, example)

    def process(self, items: list[Any]) -> list[Result]:
        from tokensift.training.datascore import SHOWN_TOKENS, score_examples

        tokenizer = self.loaded.tokenizer
        found = []
        for (conditional, _), (scored, delta) in zip(
            items, score_examples(self.loaded.model, tokenizer, items, self.scorer), strict=True
        ):
            shown = sorted(scored.tokens, key=lambda t: -float(delta[t]))[:SHOWN_TOKENS]
            found.append(
                {
                    "score": scored.value,
                    "ifd": scored.ifd,
                    "response_tokens": int(delta.numel()),
                    "informative": [tokenizer.decode([conditional.response[t]]) for t in shown],
                }
            )
        return found


@dataclass
class KVCompressJob(Job):
    """``batch kv-compress``: each text prefilled once, its KV cache compressed and written to a context store
    that ``tokensift serve --store`` answers questions from (``/v1/chat/completions`` with ``context_id``).

    Context ids are a digest of the model, method, options and text, so a re-run or a retried shard writes
    the same context again instead of a second copy."""

    command: ClassVar[str] = "kv-compress"
    columns: ClassVar[tuple[str, ...]] = ("context_id", "tokens", "bytes_full", "bytes_stored")
    method: str = "kvzip"
    budget: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    store: str = ""
    batch_size: int = 1

    def load(self) -> None:
        if self.loaded is None:
            from transformers import DynamicCache

            from tokensift.kv.model import check_supported, text_config
            from tokensift.serve.engine import KVSpec
            from tokensift.serve.store import ContextStore

            super().load()
            loaded: Any = self.loaded
            check_supported(loaded.model)
            config = text_config(loaded.model)
            self.kv = None if self.method == "none" else KVSpec(self.method, self.budget, self.options)
            self.contexts = ContextStore(self._folder(), loaded.name, 0, lambda: DynamicCache(config=config))

    def _folder(self) -> Any:
        from pathlib import Path

        from tokensift.models import cache_root

        return Path(self.store) if self.store else cache_root(self.cache_dir) / "contexts"

    def process(self, items: list[Any]) -> list[Result]:
        from tokensift.serve.app import text_head
        from tokensift.serve.engine import make_context

        found = []
        for text in items:
            digest = hashlib.sha256(
                json.dumps([self.loaded.name, self.method, self.budget, self.options, text]).encode()
            ).hexdigest()
            info, cache, logits, _ = make_context(
                self.loaded.model,
                self.loaded.tokenizer,
                text_head(self.loaded.tokenizer, text),
                kind="text",
                kv=self.kv,
                source={},
                store=self.contexts,
                context_id="ctx-" + digest[:24],
            )
            self.contexts.add(info, cache, logits)
            found.append(
                {
                    "context_id": info.id,
                    "tokens": info.tokens,
                    "bytes_full": info.bytes_full,
                    "bytes_stored": info.bytes_stored,
                }
            )
        return found


JOBS: dict[str, type[Job]] = {
    job.command: job for job in (InspectJob, EmbedJob, CompressJob, ScoreDataJob, KVCompressJob)
}


def check_job(job: Job) -> None:
    """Options a job cannot run with, found before any worker starts."""
    from tokensift.inputs import whole_number

    whole_number(job.batch_size, "batch_size", low=1)
    whole_number(job.max_tokens, "max_tokens", low=0)
    if not job.text_field:
        raise ParameterError("--text-field must name a column", option="text_field")
