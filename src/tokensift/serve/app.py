"""The OpenAI-compatible HTTP API over an :class:`~tokensift.serve.engine.Engine` (FastAPI).

Endpoints: ``POST /v1/chat/completions`` and ``/v1/completions`` (OpenAI shapes, ``stream: true`` as
server-sent events), ``GET /v1/models``, ``POST/GET/DELETE /v1/contexts`` (compressed context cache),
``GET /health`` and ``GET /metrics`` (Prometheus text). tokensift's own options ride in an extension
field, ``"tokensift": {"kv": {...}, "prompt": {...}, "context_id": ...}`` (the ``openai`` client sends
it with ``extra_body``). Every error is an OpenAI-style JSON body with the right status; a request can
only name the served model, and nothing in a request is read as a file path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from tokensift.errors import (
    ContextDamagedError,
    ContextTooLongError,
    InputError,
    NotFoundError,
    OverloadedError,
    ParameterError,
    TokensiftError,
)
from tokensift.serve.engine import ContextRequest, Engine, Job, KVSpec, Prompt, PromptSpec, Sampling

log = logging.getLogger("tokensift.serve")
SENTINEL = "\ue000tokensift-context\ue000"
"""Stands for a stored document while rendering the chat template around a request that continues it."""


# --- request bodies ---------------------------------------------------------------------------------------------
class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class MethodOptions(BaseModel):
    """A registered method (or composition), its own options and one budget (``ratio``, ``keep`` or
    ``keep_tokens``)."""

    model_config = ConfigDict(extra="forbid")
    method: str
    ratio: float | None = None
    keep: float | None = None
    keep_tokens: int | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    def budget(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "keep": self.keep, "keep_tokens": self.keep_tokens}


class KVOptions(MethodOptions):
    """KV-cache compression of the prefill; ``query_aware`` compresses the question too."""

    query_aware: bool = False


class PromptOptions(MethodOptions):
    """Prompt compression of the document part (before the question's blank line) with a text method;
    ``rate`` is LLMLingua's name for ``keep``."""

    rate: float | None = None

    def budget(self) -> dict[str, Any]:
        return {**super().budget(), "rate": self.rate}


class Extension(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kv: KVOptions | None = None
    prompt: PromptOptions | None = None
    context_id: str | None = None


class Sampled(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    n: int = 1
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    seed: int | None = None
    logprobs: bool | int | None = None
    echo: bool = False
    tokensift: Extension | None = None


class ChatRequest(Sampled):
    messages: list[Message] = Field(min_length=1)


class CompletionRequest(Sampled):
    prompt: str | list[str]


class ContextCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    text: str | None = None
    messages: list[Message] | None = None
    kv: KVOptions | None = None
    tokensift: Extension | None = None


# --- errors -----------------------------------------------------------------------------------------------------
def status_of(exc: BaseException) -> tuple[int, str, str]:
    """(HTTP status, OpenAI error type, code) for an exception."""
    if isinstance(exc, OverloadedError):
        return 429, "rate_limit_error", "overloaded"
    if isinstance(exc, NotFoundError):
        return 404, "not_found_error", "not_found"
    if isinstance(exc, ContextTooLongError):
        return 413, "invalid_request_error", "context_length_exceeded"
    if isinstance(exc, ContextDamagedError):
        return 410, "context_damaged", "context_damaged"
    if isinstance(exc, TokensiftError):
        return 400, "invalid_request_error", "invalid_value"
    return 500, "server_error", "internal_error"


def error_response(status: int, message: str, kind: str, code: str, param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)


def error_from(exc: BaseException) -> JSONResponse:
    status, kind, code = status_of(exc)
    message = str(exc) if status != 500 else "internal server error (see the server log)"
    return error_response(status, message, kind, code, getattr(exc, "option", None))


# --- prompts ----------------------------------------------------------------------------------------------------
def render(tokenizer: Any, messages: list[dict[str, str]], generation: bool) -> str:
    """``messages`` through the tokenizer's chat template (plain paragraphs without one)."""
    if getattr(tokenizer, "chat_template", None):
        text: str = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
        return text
    return "\n\n".join(m["content"] for m in messages) + ("\n" if generation else "")


def text_head(tokenizer: Any, text: str) -> str:
    """The prompt a text context consumes: the chat template's user turn up to the end of ``text`` (questions
    asked later continue it)."""
    rendered = render(tokenizer, [{"role": "user", "content": text}], generation=True)
    return rendered[: rendered.index(text) + len(text)]


class Prompts:
    """Turns request bodies into :class:`Prompt` objects (chat template, stored contexts, defaults)."""

    def __init__(
        self,
        engine: Engine,
        names: set[str],
        kv_default: KVOptions | None,
        prompt_default: PromptOptions | None,
        max_tokens: int,
        temperature: float,
    ) -> None:
        self.engine, self.tokenizer, self.names = engine, engine.tokenizer, names
        self.kv_default, self.prompt_default = kv_default, prompt_default
        self.max_tokens, self.temperature = max_tokens, temperature

    def check_model(self, name: str | None) -> None:
        if name is not None and name not in self.names:
            raise NotFoundError(f"model {name!r} is not served here; this server serves {sorted(self.names)[0]!r}")

    def render(self, messages: list[dict[str, str]], generation: bool) -> str:
        return render(self.tokenizer, messages, generation)

    def kv(self, options: KVOptions | None) -> KVSpec | None:
        options = options or self.kv_default
        if options is None or options.method == "none":
            return None
        if "tokenizer" in options.options or "press" in options.options:
            raise ParameterError("kv options cannot name a tokenizer or a press", option="options")
        from tokensift.kv.api import press_from

        budget = options.budget()
        if all(v is None for v in budget.values()):
            budget["ratio"] = 0.5
        press_from(options.method, **budget, **options.options)  # unknown method or bad budget: 400 now
        return KVSpec(options.method, budget, dict(options.options), options.query_aware)

    def prompt(self, options: PromptOptions | None) -> PromptSpec | None:
        options = options or self.prompt_default
        if options is None or options.method == "none":
            return None
        from tokensift.methods import resolve
        from tokensift.text.api import make_budget

        budget = options.budget()
        make_budget(**budget)
        resolve("text", options.method, **options.options)
        return PromptSpec(options.method, budget, dict(options.options))

    def sampling(self, body: Sampled) -> Sampling:
        if body.n != 1:
            raise ParameterError(f"n must be 1 (one choice per request), got {body.n}", option="n")
        if body.logprobs not in (None, False, 0) or body.echo:
            raise ParameterError("logprobs and echo are not supported by this server", option="logprobs")
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ParameterError("stop takes up to 4 non-empty strings", option="stop")
        asked = body.max_completion_tokens or body.max_tokens
        temperature = self.temperature if body.temperature is None else body.temperature
        top_p = 1.0 if body.top_p is None else body.top_p
        return Sampling(asked or self.max_tokens, temperature, top_p, stops, body.seed, explicit=asked is not None)

    def _split(self, text: str, kv: KVSpec | None) -> tuple[str, str, int, str]:
        """(document, rest, split, question) of a user text: the document is what precedes its last blank line."""
        cut = text.rfind("\n\n")
        document = text[:cut] if cut > 0 else ""
        rest = text[len(document) :]
        question = text[cut + 2 :] if cut > 0 else text
        return document, rest, len(rest) if kv is not None and kv.query_aware else 0, question

    def chat(self, body: ChatRequest) -> Prompt:
        self.check_model(body.model)
        ext = body.tokensift or Extension()
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        if ext.context_id is not None:
            return self._after_context(ext, messages=messages)
        kv, prompt = self.kv(ext.kv), self.prompt(ext.prompt)
        rendered = self.render(messages, generation=True)
        last = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
        if last is None or (kv is None and prompt is None):
            return Prompt("", "", rendered, 0, kv=kv, prompt=prompt)
        content = messages[last]["content"]
        at = rendered.rfind(content)
        if at < 0:
            raise InputError("the chat template changed the last user message; it cannot be compressed")
        document, rest, split, question = self._split(content, kv)
        before, after = rendered[:at], rest + rendered[at + len(content) :]
        return Prompt(before, document, after, split, kv=kv, prompt=prompt, question=question)

    def completion(self, body: CompletionRequest) -> Prompt:
        self.check_model(body.model)
        text = body.prompt if isinstance(body.prompt, str) else "".join(body.prompt)
        if isinstance(body.prompt, list) and len(body.prompt) != 1:
            raise ParameterError("prompt takes one string (one choice per request)", option="prompt")
        ext = body.tokensift or Extension()
        if ext.context_id is not None:
            return self._after_context(ext, text=text)
        kv, prompt = self.kv(ext.kv), self.prompt(ext.prompt)
        if not text:
            raise ParameterError("the prompt is empty", option="prompt")
        if kv is None and prompt is None:
            return Prompt("", "", text, 0)
        document, rest, split, question = self._split(text, kv)
        return Prompt("", document, rest, split, kv=kv, prompt=prompt, question=question)

    def _after_context(
        self, ext: Extension, *, messages: list[dict[str, str]] | None = None, text: str | None = None
    ) -> Prompt:
        """The tail that continues a stored context (its head is the context's rendered text)."""
        assert ext.context_id is not None
        if ext.kv is not None or ext.prompt is not None:
            raise InputError("a stored context is already compressed: give kv options when creating it")
        info = self.engine.store.info(ext.context_id)
        if text is not None:
            return Prompt("", "", text, 0, context_id=info.id)
        assert messages is not None
        if info.kind == "text":
            if messages[0]["role"] != "user":
                raise InputError("a text context continues the first user message: start the messages with it")
            first = {"role": "user", "content": SENTINEL + "\n\n" + messages[0]["content"]}
            rendered = self.render([first, *messages[1:]], generation=True)
            at = rendered.index(SENTINEL)
            if not info.head_text.startswith(rendered[:at]):
                raise InputError("these messages render a different prompt before the stored document")
            return Prompt("", "", rendered[at + len(SENTINEL) :], 0, context_id=info.id)
        source = info.options.get("messages", [])
        rendered = self.render([*source, *messages], generation=True)
        if not rendered.startswith(info.head_text):
            raise InputError("the chat template renders the stored messages differently when these follow them")
        return Prompt("", "", rendered[len(info.head_text) :], 0, context_id=info.id)

    def context(self, body: ContextCreate) -> ContextRequest:
        self.check_model(body.model)
        if (body.text is None) == (body.messages is None):
            raise ParameterError("a context takes either 'text' or 'messages'", option="text")
        if body.kv is not None and body.tokensift is not None and body.tokensift.kv is not None:
            raise ParameterError("give kv options once ('kv' or 'tokensift.kv')", option="kv")
        kv = self.kv(body.kv or (body.tokensift.kv if body.tokensift else None))
        if body.text is not None:
            if not body.text.strip():
                raise ParameterError("the context text is empty", option="text")
            return ContextRequest(text_head(self.tokenizer, body.text), "text", kv, {})
        assert body.messages is not None
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        if not messages or not any(m["content"].strip() for m in messages):
            raise ParameterError("the context messages are empty", option="messages")
        return ContextRequest(self.render(messages, generation=False), "messages", kv, {"messages": messages})


# --- the app ----------------------------------------------------------------------------------------------------
async def _next(job: Job) -> tuple[str, Any]:
    item: tuple[str, Any] = await job.queue.get()
    return item


async def _watch(request: Request, engine: Engine, job: Job) -> tuple[str, Any] | None:
    """The job's next event, or None when the client went away first (the job is then cancelled)."""
    while True:
        try:
            return await asyncio.wait_for(_next(job), timeout=0.25)
        except TimeoutError:
            if await request.is_disconnected():
                engine.cancel(job)
                return None


def create_app(engine: Engine, prompts: Prompts) -> FastAPI:
    """The FastAPI application (the engine's thread starts and stops with it)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not engine.thread.is_alive():
            engine.start()
        yield
        engine.stop()

    app = FastAPI(title="tokensift", version="0.1.0", docs_url=None, redoc_url=None, lifespan=lifespan)
    metrics, name = engine.metrics, engine.store.model

    @app.middleware("http")
    async def _count(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "other")
        metrics.inc("tokensift_requests_total", endpoint=path, status=str(response.status_code))
        return response

    @app.exception_handler(RequestValidationError)
    async def _malformed(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors()[:5]:
            where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
            problems.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
        return error_response(422, "malformed request: " + "; ".join(problems), "invalid_request_error", "malformed")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), "invalid_request_error", "http_error")

    @app.exception_handler(TokensiftError)
    async def _ours(request: Request, exc: TokensiftError) -> JSONResponse:
        return error_from(exc)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_from(exc)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        waiting, running = engine.depth
        status = "ok" if engine.thread.is_alive() else "stopped"
        return {"status": status, "model": name, "waiting": waiting, "running": running}

    @app.get("/metrics")
    async def metrics_text() -> PlainTextResponse:
        store = engine.store
        metrics.set("tokensift_context_cache_bytes", store.held_bytes)
        metrics.set("tokensift_context_cache_limit_bytes", store.memory_bytes)
        metrics.set("tokensift_context_store_bytes", store.stored_bytes())
        metrics.set("tokensift_contexts_in_memory", len(store.memory))
        metrics.set("tokensift_contexts_stored", len(store.list()))
        metrics.set("tokensift_context_loads_total", store.loads)
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    def model_card() -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": "tokensift"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str) -> dict[str, Any]:
        prompts.check_model(model_id)
        return model_card()

    async def started(request: Request, job: Job) -> tuple[str, Any] | Response:
        """Queue ``job`` and wait for its first event; a response instead when it failed or the client left."""
        engine.submit(job)
        event = await _watch(request, engine, job)
        if event is None:
            return Response(status_code=499)
        if event[0] == "error":
            return error_from(event[1])
        return event

    async def run(request: Request, prompt: Prompt, sampling: Sampling, body: Sampled, chat: bool) -> Response:
        job = Job(prompt, sampling, asyncio.get_running_loop())
        first = await started(request, job)
        if isinstance(first, Response):
            return first
        ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        if body.stream:
            usage = bool((body.stream_options or {}).get("include_usage"))
            return StreamingResponse(
                _events(engine, job, first, ident, created, name, chat, usage), media_type="text/event-stream"
            )
        text, event = "", first
        while True:
            if event[0] == "error":
                return error_from(event[1])
            if event[0] == "delta":
                text += event[1]
            if event[0] == "done":
                break
            got = await _watch(request, engine, job)
            if got is None:
                return Response(status_code=499)
            event = got
        choice: dict[str, Any] = {"index": 0, "finish_reason": job.finish_reason, "logprobs": None}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        return JSONResponse(
            {
                "id": ident,
                "object": "chat.completion" if chat else "text_completion",
                "created": created,
                "model": name,
                "choices": [choice],
                "usage": _usage(job),
                "tokensift": job.info,
            }
        )

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request) -> Response:
        return await run(request, prompts.chat(body), prompts.sampling(body), body, chat=True)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await run(request, prompts.completion(body), prompts.sampling(body), body, chat=False)

    @app.post("/v1/contexts")
    async def create_context(body: ContextCreate, request: Request) -> Response:
        event = await started(request, Job(prompts.context(body), None, asyncio.get_running_loop()))
        return event if isinstance(event, Response) else JSONResponse(event[1])

    @app.get("/v1/contexts")
    async def list_contexts() -> dict[str, Any]:
        return {"object": "list", "data": [info.public() for info in engine.store.list()]}

    @app.get("/v1/contexts/{context_id}")
    async def get_context(context_id: str) -> dict[str, Any]:
        return engine.store.info(context_id).public()

    @app.delete("/v1/contexts/{context_id}")
    async def delete_context(context_id: str) -> dict[str, Any]:
        engine.store.delete(context_id)
        return {"id": context_id, "object": "tokensift.context.deleted", "deleted": True}

    return app


def _usage(job: Job) -> dict[str, int]:
    return {
        "prompt_tokens": job.prompt_tokens,
        "completion_tokens": len(job.ids),
        "total_tokens": job.prompt_tokens + len(job.ids),
    }


async def _events(
    engine: Engine, job: Job, first: tuple[str, Any], ident: str, created: int, model: str, chat: bool, usage: bool
) -> AsyncIterator[str]:
    """Server-sent events of one streamed request; a client that goes away cancels the job."""

    def chunk(delta: str | None, finish: str | None, role: bool = False) -> str:
        if chat:
            payload: dict[str, Any] = {"content": delta} if delta is not None else {}
            if role:
                payload = {"role": "assistant", "content": ""}
            choice: dict[str, Any] = {"index": 0, "delta": payload, "finish_reason": finish, "logprobs": None}
        else:
            choice = {"index": 0, "text": delta or "", "finish_reason": finish, "logprobs": None}
        kind = "chat.completion.chunk" if chat else "text_completion"
        body = {"id": ident, "object": kind, "created": created, "model": model, "choices": [choice]}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    try:
        if chat:
            yield chunk(None, None, role=True)
        event = first
        while True:
            kind, payload = event
            if kind == "delta":
                yield chunk(payload, None)
            elif kind == "done":
                yield chunk(None if chat else "", payload)
                break
            else:
                status, kind_name, code = status_of(payload)
                error = {"error": {"message": str(payload), "type": kind_name, "code": code, "status": status}}
                yield f"data: {json.dumps(error)}\n\n"
                break
            event = await _next(job)
        if usage:
            tally: dict[str, Any] = {
                "id": ident,
                "object": "chat.completion.chunk" if chat else "text_completion",
                "created": created,
                "model": model,
                "choices": [],
                "usage": _usage(job),
                "tokensift": job.info,
            }
            yield f"data: {json.dumps(tally)}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        if job.finish_reason is None:
            engine.cancel(job)
