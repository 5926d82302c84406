"""The serving engine: one thread owns the model; requests are prefilled as they arrive and decoded together.

Every use of the model (prompt compression, prefill with KV compression, context creation, decoding)
happens on the engine's thread, so attention routes never interleave. Between decoding steps the loop
admits waiting requests (prefills them, possibly from a stored compressed context) into a
:class:`~tokensift.kv.batch.Batch`, then decodes one token for every running request in one forward, and
lets finished or cancelled requests leave: continuous batching over ragged caches. Requests talk to the
web side through :class:`Job` (thread-safe events into an asyncio queue). The queue is bounded:
:meth:`Engine.submit` raises :class:`OverloadedError` (HTTP 429) when it is full.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Literal

import torch
from torch import Tensor

from tokensift.errors import InputError, OverloadedError, TokensiftError
from tokensift.kv.api import press_from
from tokensift.kv.attach import CompressionStats, attached
from tokensift.kv.batch import Batch
from tokensift.kv.cache import cache_bytes
from tokensift.kv.model import check_length, text_config
from tokensift.kv.qa import CompressedContext, compress_context, continue_from, copy_cache
from tokensift.kv.tasks import leading_ids
from tokensift.serve.metrics import Metrics
from tokensift.serve.store import ContextInfo, ContextStore, new_id

log = logging.getLogger("tokensift.serve")


@dataclass
class KVSpec:
    """KV-cache compression of a request's or context's prefill (validated when built)."""

    method: str
    budget: dict[str, Any]
    options: dict[str, Any]
    query_aware: bool = False

    def press(self, tokenizer: Any) -> Any:
        return press_from(self.method, **self.budget, tokenizer=tokenizer, **self.options)

    def describe(self) -> dict[str, Any]:
        return {"method": self.method, **{k: v for k, v in self.budget.items() if v is not None}, **self.options}


@dataclass
class PromptSpec:
    """Prompt compression of the document part of a request (a text method and its budget)."""

    method: str
    budget: dict[str, Any]
    options: dict[str, Any]


@dataclass
class Sampling:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    explicit: bool = True
    """``max_tokens`` was asked for (otherwise it is the server's default, cut to the positions left)."""


@dataclass
class Prompt:
    """The rendered prompt as ``before + document + rest``: the document is what prompt compression shortens
    and KV compression compresses (with ``before``, and with ``rest[:split]`` when query-aware); the rest is
    fed after. After a stored context (``context_id``) the whole prompt is ``rest``.
    """

    before: str
    document: str
    rest: str
    split: int = 0
    context_id: str | None = None
    kv: KVSpec | None = None
    prompt: PromptSpec | None = None
    question: str | None = None

    @property
    def head(self) -> str:
        return self.before + self.document + self.rest[: self.split]

    @property
    def tail(self) -> str:
        return self.rest[self.split :]


@dataclass
class ContextRequest:
    """A context to prefill, compress and store."""

    head: str
    kind: Literal["text", "messages"]
    kv: KVSpec | None
    source: dict[str, Any]


@dataclass
class Job:
    """One request's life on the engine: its input, its sampling, and events back to the web side."""

    work: Prompt | ContextRequest
    sampling: Sampling | None
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: bool = False
    submitted: float = field(default_factory=time.perf_counter)
    first_token: float | None = None
    ids: list[int] = field(default_factory=list)
    sent: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    length: int = 0
    generator: torch.Generator | None = None
    pending: int = -1
    """The token sampled last, fed at the next decoding step."""
    info: dict[str, Any] = field(default_factory=dict)

    def emit(self, kind: str, payload: Any = None) -> None:
        """Hand an event to the request's coroutine (from the engine thread)."""
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, payload))
        except RuntimeError:  # the loop is gone: nobody is listening any more
            self.cancelled = True


class Engine:
    """The model, its tokenizer, the context store and the decoding loop (start with :meth:`start`)."""

    def __init__(
        self,
        loaded: Any,
        store: ContextStore,
        *,
        max_batch: int = 8,
        max_queue: int = 32,
        metrics: Metrics | None = None,
    ) -> None:
        self.loaded, self.model, self.tokenizer = loaded, loaded.model, loaded.tokenizer
        self.store = store
        self.max_batch, self.max_queue = max_batch, max_queue
        self.metrics = metrics or Metrics()
        self.positions = int(getattr(text_config(self.model), "max_position_embeddings", 0) or 0)
        eos = self.tokenizer.eos_token_id
        self.stop_ids = {eos} if isinstance(eos, int) else set(eos or [])
        self.waiting: deque[Job] = deque()
        self.running: list[Job] = []
        self.batch = Batch(self.model, max_batch)
        self.condition = threading.Condition()
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, name="tokensift-engine", daemon=True)

    # --- the web side ----------------------------------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        with self.condition:
            self.stopping = True
            self.condition.notify()
        self.thread.join(timeout=30)

    def submit(self, job: Job) -> None:
        """Queue ``job``; :class:`OverloadedError` when ``max_queue`` requests already wait."""
        with self.condition:
            if len(self.waiting) >= self.max_queue:
                self.metrics.inc("tokensift_rejected_total")
                raise OverloadedError(
                    f"the server is busy: {len(self.waiting)} requests wait and {len(self.running)} are decoding; "
                    "retry later"
                )
            self.waiting.append(job)
            self.condition.notify()

    def cancel(self, job: Job) -> None:
        """The client went away: the job leaves the queue or the batch before the next step."""
        if not job.cancelled:
            self.metrics.inc("tokensift_cancelled_total")
        job.cancelled = True
        with self.condition:
            self.condition.notify()

    @property
    def depth(self) -> tuple[int, int]:
        """(waiting, running)."""
        return len(self.waiting), len(self.running)

    # --- the engine thread -----------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self.condition:
                while not self.stopping and not self.waiting and not self.running:
                    self.condition.wait()
                if self.stopping:
                    return
                admit: list[Job] = []
                while self.waiting and len(self.running) + len(admit) < self.max_batch:
                    admit.append(self.waiting.popleft())
            for job in admit:
                self._guard(job, self._admit)
            self._drop_cancelled()
            if self.running:
                try:
                    self._step()
                except Exception as exc:  # a failed step fails the jobs in it, never the server
                    log.exception("decoding step failed")
                    for job in list(self.running):
                        self._fail(job, exc)
                    self.running, self.batch = [], Batch(self.model, self.max_batch)
            self.metrics.set("tokensift_queue_depth", len(self.waiting))
            self.metrics.set("tokensift_running_requests", len(self.running))
            self.metrics.set("tokensift_batch_bytes", self.batch.nbytes() if self.running else 0)

    def _guard(self, job: Job, fn: Callable[[Job], None]) -> None:
        if job.cancelled:
            return
        try:
            fn(job)
        except Exception as exc:
            if not isinstance(exc, TokensiftError):
                log.exception("request failed")
            self._fail(job, exc)

    def _fail(self, job: Job, exc: BaseException) -> None:
        job.finish_reason = "error"
        job.emit("error", exc)

    def _drop_cancelled(self) -> None:
        gone = [i for i, job in enumerate(self.running) if job.cancelled]
        if gone:
            order = self.batch.leave(gone)
            self.running = [self.running[i] for i in order]

    def _ids(self, text: str, first: bool = False) -> list[int]:
        return token_ids(self.tokenizer, text, first)

    def _admit(self, job: Job) -> None:
        work = job.work
        if isinstance(work, ContextRequest):
            self._create_context(job, work)
            return
        assert job.sampling is not None
        if work.prompt is not None:
            work = self._shorten(job, work)
        head_ids = self._ids(work.head, first=True)
        tail_ids = self._ids(work.tail, first=not head_ids and work.context_id is None)
        started = time.perf_counter()
        if work.context_id is not None:
            stored = self.store.get(work.context_id)
            context = CompressedContext(stored.cache, stored.info.tokens, CompressionStats(), 0.0, stored.last_logits)
            job.info.update(context_id=work.context_id, cache_bytes_context=stored.nbytes)
        elif work.kv is not None and head_ids:
            check_length(
                self.model, len(head_ids) + len(tail_ids) + (job.sampling.max_tokens if job.sampling.explicit else 1)
            )
            press = work.kv.press(self.tokenizer)
            context = compress_context(self.model, torch.tensor([head_ids]), press)
            stats = context.stats
            job.info.update(
                kv=work.kv.describe(),
                cache_bytes_before=stats.bytes_before,
                cache_bytes_after=stats.bytes_after,
                kept_fraction=stats.kept_fraction,
                scoring_seconds=stats.scoring_seconds,
            )
        else:
            tail_ids, context = head_ids + tail_ids, None
        total = (context.length if context else 0) + len(tail_ids)
        if not job.sampling.explicit and self.positions:
            job.sampling.max_tokens = max(1, min(job.sampling.max_tokens, self.positions - total))
        check_length(self.model, total + job.sampling.max_tokens)
        if context is None:
            cache, logits = self._prefill(tail_ids)
        else:
            cache = copy_cache(context.cache)
            if tail_ids:
                logits = continue_from(self.model, context, torch.tensor([tail_ids]), cache)[:, -1]
            else:
                logits = context.last_logits
        job.info["prefill_seconds"] = time.perf_counter() - started
        job.prompt_tokens, job.length = total, total
        self.metrics.inc("tokensift_prompt_tokens_total", len(head_ids) + len(tail_ids))
        if job.sampling.seed is not None:
            job.generator = torch.Generator().manual_seed(job.sampling.seed)
        token = self._sample(job, logits[0])
        if self._push(job, token):
            return
        self.batch.join(cache, job.length)
        job.pending = token
        self.running.append(job)

    @torch.no_grad()
    def _prefill(self, ids: list[int]) -> tuple[Any, Tensor]:
        from transformers import DynamicCache

        if not ids:
            raise InputError("the prompt is empty")
        cache = DynamicCache(config=text_config(self.model))
        with attached(self.model, None):
            logits = self.model(torch.tensor([ids]), past_key_values=cache, use_cache=True).logits[:, -1]
        return cache, logits

    def _shorten(self, job: Job, work: Prompt) -> Prompt:
        """Prompt compression of the document part (the head ends with it); the question is kept."""
        from tokensift.text.api import Compressor

        spec = work.prompt
        assert spec is not None
        if not work.document.strip():
            raise InputError("prompt compression found no document to compress (text before the question)")
        compressor = Compressor(spec.method, model=self.loaded, options=spec.options)
        prepared = compressor.prepare(work.document, work.question)
        result = compressor.compress(prepared, **spec.budget)
        assert isinstance(result.compressed, str)
        job.info["prompt"] = {
            "method": result.method,
            "tokens_before": result.tokens_before,
            "tokens_after": result.tokens_after,
        }
        return Prompt(
            work.before, result.compressed, work.rest, work.split, work.context_id, work.kv, None, work.question
        )

    def _create_context(self, job: Job, work: ContextRequest) -> None:
        info, cache, logits, seconds = make_context(
            self.model, self.tokenizer, work.head, kind=work.kind, kv=work.kv, source=work.source, store=self.store
        )
        self.store.add(info, cache, logits)
        self.metrics.inc("tokensift_contexts_created_total")
        self.metrics.observe("tokensift_context_seconds", seconds)
        job.emit("context", {**info.public(), "prefill_seconds": seconds})

    # --- decoding --------------------------------------------------------------------------------------------
    def _sample(self, job: Job, logits: Tensor) -> int:
        assert job.sampling is not None
        if job.sampling.temperature <= 0.0:
            return int(logits.argmax())
        probs = torch.softmax(logits.float() / job.sampling.temperature, dim=-1)
        if job.sampling.top_p < 1.0:
            ordered, order = probs.sort(descending=True)
            outside = ordered.cumsum(0) - ordered > job.sampling.top_p
            ordered[outside] = 0.0
            probs = torch.zeros_like(probs).scatter(0, order, ordered)
        return int(torch.multinomial(probs, 1, generator=job.generator))

    def _push(self, job: Job, token: int) -> bool:
        """Take one generated token; emit the new text; True when the job is finished."""
        assert job.sampling is not None
        now = time.perf_counter()
        if job.first_token is None:
            job.first_token = now
            self.metrics.observe("tokensift_time_to_first_token_seconds", now - job.submitted)
        finished = None
        if token in self.stop_ids:
            finished = "stop"
        else:
            job.ids.append(token)
            job.length += 1
            self.metrics.inc("tokensift_generated_tokens_total")
        text = self.tokenizer.decode(job.ids, skip_special_tokens=True)
        for stop in job.sampling.stop:
            cut = text.find(stop)
            if cut >= 0:
                text, finished = text[:cut], "stop"
        if finished is None and (len(job.ids) >= job.sampling.max_tokens or job.length >= self.positions > 0):
            finished = "length"
        if finished is None:
            text = _hold_back(text, job.sampling.stop)
        if len(text) > len(job.sent):
            job.emit("delta", text[len(job.sent) :])
            job.sent = text
        if finished is not None:
            job.finish_reason = finished
            job.info["decode_seconds_per_token"] = (now - job.first_token) / max(1, len(job.ids) - 1)
            self.metrics.observe("tokensift_request_seconds", now - job.submitted)
            job.emit("done", finished)
            return True
        return False

    @torch.no_grad()
    def _step(self) -> None:
        tokens = torch.tensor([job.pending for job in self.running])
        with attached(self.model, None):
            logits = self.batch.step(tokens)
        self.metrics.inc("tokensift_decode_steps_total")
        self.metrics.inc("tokensift_decode_rows_total", len(self.running))
        finished = []
        for row, job in enumerate(self.running):
            if job.cancelled:
                finished.append(row)
                continue
            token = self._sample(job, logits[row])
            if self._push(job, token):
                finished.append(row)
            else:
                job.pending = token
        if finished:
            order = self.batch.leave(finished)
            self.running = [self.running[i] for i in order]


def _hold_back(text: str, stops: list[str]) -> str:
    """``text`` without an unfinished character or the start of a stop string at its end (sent later)."""
    text = text.rstrip("\ufffd")
    hold = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), hold, -1):
            if text.endswith(stop[:n]):
                hold = n
                break
    return text[: len(text) - hold]


def _untouched_bytes(cache: Any, stats: CompressionStats) -> int:
    """Bytes of the layers compression left alone (sliding-window layers)."""
    compressed = {r.layer for r in stats.layers}
    untouched = [layer for i, layer in enumerate(cache.layers) if i not in compressed]
    return cache_bytes(SimpleNamespace(layers=untouched))


def token_ids(tokenizer: Any, text: str, first: bool = False) -> list[int]:
    """Token ids of ``text``; the ``first`` piece of a sequence gets the tokenizer's leading special tokens."""
    if not text:
        return []
    lead = leading_ids(tokenizer, text) if first else []
    return lead + list(tokenizer(text, add_special_tokens=False).input_ids)


def make_context(
    model: Any,
    tokenizer: Any,
    head: str,
    *,
    kind: str,
    kv: KVSpec | None,
    source: dict[str, Any],
    store: ContextStore,
    context_id: str | None = None,
) -> tuple[ContextInfo, Any, Tensor, float]:
    """Prefill ``head`` (compressed with ``kv`` when given) as a context for ``store``: its info (a new id unless
    ``context_id``), one-row cache, the logits after it and the seconds it took. The server's ``/v1/contexts``
    and ``tokensift batch kv-compress`` both make contexts here, so the server reads what the batch wrote."""
    ids = token_ids(tokenizer, head, first=True)
    if not ids:
        raise InputError("the context is empty")
    check_length(model, len(ids))
    started = time.perf_counter()
    if kv is not None:
        context = compress_context(model, torch.tensor([ids]), kv.press(tokenizer))
        cache, logits = context.cache, context.last_logits
        bytes_full = context.stats.bytes_before + _untouched_bytes(cache, context.stats)
    else:
        from transformers import DynamicCache

        cache = DynamicCache(config=text_config(model))
        with torch.no_grad(), attached(model, None):
            logits = model(torch.tensor([ids]), past_key_values=cache, use_cache=True).logits[:, -1]
        bytes_full = cache_bytes(cache)
    seconds = time.perf_counter() - started
    info = ContextInfo(
        id=context_id or new_id(),
        model=store.model,
        kind=kind,
        head_text=head,
        tokens=len(ids),
        method=kv.method if kv else None,
        options=(kv.describe() if kv else {}) | source,
        bytes_full=bytes_full,
        bytes_stored=cache_bytes(cache),
        created=time.time(),
    )
    return info, cache, logits, seconds
