"""Assemble a server from a loaded model: context store, engine, request defaults and the FastAPI app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_MEMORY", "Server", "build"]

DEFAULT_MEMORY = 2**30
"""Context caches held in memory (1 GiB); the rest wait on disk."""


class Server:
    """The pieces of a running server: the app, its engine and the loaded model."""

    def __init__(self, app: Any, engine: Any, loaded: Any) -> None:
        self.app, self.engine, self.loaded = app, engine, loaded


def build(
    loaded: Any,
    *,
    store: str | Path | None = None,
    memory_bytes: int = DEFAULT_MEMORY,
    max_batch: int = 8,
    max_queue: int = 32,
    max_tokens: int = 256,
    temperature: float = 1.0,
    kv: dict[str, Any] | None = None,
    prompt: dict[str, Any] | None = None,
    aliases: tuple[str, ...] = (),
) -> Server:
    """The server for an already loaded model (:func:`tokensift.load_model`); ``kv``/``prompt`` are the
    default compression of requests that name none (``{"method": "kvzip", "ratio": 0.75}``)."""
    from transformers import DynamicCache

    from tokensift.inputs import whole_number
    from tokensift.kv.model import check_supported, text_config
    from tokensift.models import cache_root
    from tokensift.serve.app import KVOptions, PromptOptions, Prompts, create_app
    from tokensift.serve.engine import Engine
    from tokensift.serve.store import ContextStore

    check_supported(loaded.model)
    for value, name in ((max_batch, "max_batch"), (max_queue, "max_queue"), (max_tokens, "max_tokens")):
        whole_number(value, name)
    folder = Path(store) if store is not None else cache_root() / "contexts"
    config = text_config(loaded.model)
    contexts = ContextStore(folder, loaded.name, memory_bytes, lambda: DynamicCache(config=config))
    engine = Engine(loaded, contexts, max_batch=max_batch, max_queue=max_queue)
    prompts = Prompts(
        engine,
        {loaded.name, *aliases},
        KVOptions(**kv) if kv else None,
        PromptOptions(**prompt) if prompt else None,
        max_tokens,
        temperature,
    )
    prompts.kv(prompts.kv_default)  # a bad default fails at start, not on the first request
    prompts.prompt(prompts.prompt_default)
    return Server(create_app(engine, prompts), engine, loaded)
