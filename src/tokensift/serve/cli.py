"""``tokensift serve`` (attached in :mod:`tokensift.cli`). Cheap to import: FastAPI loads when it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from tokensift import options

err = Console(stderr=True)


def serve(
    model: options.Model = "smollm2-135m",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    store: Annotated[
        Path | None, typer.Option(help="Context store folder (default: <cache>/contexts); survives restarts.")
    ] = None,
    memory: Annotated[str, typer.Option(help="Context caches held in memory (the rest are read from disk).")] = "1GiB",
    max_batch: Annotated[int, typer.Option(help="Requests decoded together.")] = 8,
    max_queue: Annotated[int, typer.Option(help="Requests that may wait; beyond it: HTTP 429.")] = 32,
    max_tokens: Annotated[int, typer.Option(help="Default max_tokens of a request.")] = 256,
    temperature: Annotated[float, typer.Option(help="Default temperature (0 = greedy).")] = 1.0,
    kv_method: Annotated[str | None, typer.Option(help="Default KV compression (e.g. kvzip, adakv:snapkv).")] = None,
    kv_ratio: Annotated[float | None, typer.Option(help="Default KV --ratio (fraction of tokens removed).")] = None,
    kv_keep: Annotated[float | None, typer.Option(help="Default KV --keep (fraction kept).")] = None,
    prompt_method: Annotated[str | None, typer.Option(help="Default prompt compression (e.g. llmlingua).")] = None,
    prompt_rate: Annotated[float | None, typer.Option(help="Default prompt compression rate (fraction kept).")] = None,
    cache_dir: options.CacheDir = None,
) -> None:
    """Serve the model over an OpenAI-compatible HTTP API with KV and prompt compression and a compressed
    context cache (POST /v1/contexts). See the README's "Serving" section."""
    import socket

    from tokensift.errors import InputError, ParameterError
    from tokensift.inputs import parse_bytes, whole_number

    memory_bytes = parse_bytes(memory, "memory")
    whole_number(port, "port", low=1)
    if port > 65535:
        raise ParameterError(f"--port must be at most 65535, got {port}", option="port")
    if not 0.0 <= temperature <= 2.0:
        raise ParameterError(f"--temperature must be in [0, 2], got {temperature}", option="temperature")
    kv: dict[str, Any] | None = None
    if kv_method is not None:
        kv = {"method": kv_method, "ratio": kv_ratio, "keep": kv_keep}
    elif kv_ratio is not None or kv_keep is not None:
        raise ParameterError("--kv-ratio/--kv-keep need --kv-method", option="kv_method")
    prompt: dict[str, Any] | None = None
    if prompt_method is not None:
        prompt = {"method": prompt_method, "rate": prompt_rate if prompt_rate is not None else 0.5}
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    import uvicorn

    from tokensift.models import load_model
    from tokensift.serve.server import build

    with err.status(f"loading {model} …"):
        loaded = load_model(model, cache_dir=cache_dir)
    server = build(
        loaded,
        store=store,
        memory_bytes=memory_bytes,
        max_batch=max_batch,
        max_queue=max_queue,
        max_tokens=max_tokens,
        temperature=temperature,
        kv=kv,
        prompt=prompt,
        aliases=(model,),
    )
    contexts = server.engine.store
    err.print(
        f"serving {loaded.name} on http://{host}:{port}/v1 · contexts in {contexts.folder} "
        f"({len(contexts.list())} stored, {memory_bytes / 2**30:.2f} GiB in memory) · batch {max_batch}, "
        f"queue {max_queue}",
        highlight=False,
    )
    uvicorn.run(server.app, host=host, port=port, log_level="warning")
