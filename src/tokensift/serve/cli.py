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
    ray_replicas: Annotated[
        int, typer.Option(help="Run N Ray Serve replicas of the server (0: this process); contexts shared on --store.")
    ] = 0,
    ray: Annotated[str, typer.Option(help="With --ray-replicas: auto (RAY_ADDRESS or a local Ray) or an address.")] = (
        "auto"
    ),
    cpus_per_replica: Annotated[int, typer.Option(help="With --ray-replicas: CPUs (torch threads) each.")] = 1,
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
    whole_number(ray_replicas, "ray_replicas", low=0)
    whole_number(cpus_per_replica, "cpus_per_replica", low=1)
    if ray_replicas:
        _replicas(model, host, port, ray_replicas, cpus_per_replica, ray, store, cache_dir, memory_bytes, locals())
        return
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


def _replicas(
    model: str,
    host: str,
    port: int,
    replicas: int,
    cpus: int,
    address: str,
    store: Path | None,
    cache_dir: Path | None,
    memory_bytes: int,
    given: dict[str, Any],
) -> None:
    """``serve --ray-replicas N``: the server as Ray Serve replicas sharing one context store folder."""
    try:
        import ray.serve  # noqa: F401
    except ImportError:
        from tokensift.errors import ParameterError

        raise ParameterError(
            "--ray-replicas needs Ray Serve: pip install 'tokensift[scale]'", option="ray_replicas"
        ) from None
    from tokensift.models import cache_root
    from tokensift.serve.replicas import run

    folder = (store if store is not None else cache_root(cache_dir) / "contexts").resolve()
    settings = {
        "store": str(folder),
        "memory_bytes": memory_bytes,
        **{k: given[k] for k in ("max_batch", "max_queue", "max_tokens", "temperature", "kv", "prompt")},
        "aliases": (model,),
    }
    err.print(
        f"serving {model} as {replicas} Ray Serve replica(s) × {cpus} CPU on http://{host}:{port}/v1 · contexts in "
        f"{folder} (shared) · Ctrl+C stops",
        highlight=False,
    )
    run(
        model,
        host=host,
        port=port,
        replicas=replicas,
        cpus_per_replica=cpus,
        address=address,
        cache_dir=str(cache_dir.resolve()) if cache_dir is not None else None,
        settings=settings,
    )
