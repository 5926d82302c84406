"""``tokensift serve --ray-replicas N``: the same server as N Ray Serve replicas behind Ray's HTTP proxy.

Each replica is a Ray actor that loads the model once and runs the unchanged FastAPI app of
:func:`tokensift.serve.server.build` (its engine, continuous batching and metrics are per replica). Ray's proxy
spreads requests over the replicas. Contexts (``/v1/contexts``) live in one store folder every replica opens
(:class:`~tokensift.serve.store.ContextStore`: SQLite index in WAL mode, one file per context), so a context
made through one replica is answered from by any other, and a deleted one is gone for all of them. On a cluster
the folder must be on a disk every node mounts. Each response carries ``x-tokensift-replica`` (the replica's
process id), so a client or a test can see which replica answered.
"""

from __future__ import annotations

import os
from typing import Any

REPLICA_HEADER = "x-tokensift-replica"


class Replica:
    """One replica: the model and the server's app (Ray Serve calls ``__serve_build_asgi_app__``)."""

    def __init__(self, model: str, cache_dir: str | None, threads: int, settings: dict[str, Any]) -> None:
        import torch

        from tokensift.models import load_model
        from tokensift.serve.server import build

        torch.set_num_threads(threads)
        self.server = build(load_model(model, cache_dir=cache_dir), **settings)
        pid = str(os.getpid())

        @self.server.app.middleware("http")
        async def _replica(request: Any, call_next: Any) -> Any:
            response = await call_next(request)
            response.headers[REPLICA_HEADER] = pid
            return response

    def __serve_build_asgi_app__(self) -> Any:
        return self.server.app


def application(
    model: str,
    *,
    replicas: int,
    cpus_per_replica: int = 1,
    cache_dir: str | None = None,
    settings: dict[str, Any],
) -> Any:
    """The Ray Serve application: ``replicas`` copies of :class:`Replica`, each with ``cpus_per_replica`` CPUs
    (and as many torch threads). ``settings`` are :func:`~tokensift.serve.server.build`'s keyword arguments;
    its ``store`` should be a folder every replica can reach."""
    from ray import serve

    deployment = serve.deployment(
        name="tokensift",
        num_replicas=replicas,
        ray_actor_options={"num_cpus": cpus_per_replica},
        max_ongoing_requests=int(settings.get("max_queue", 32)) + int(settings.get("max_batch", 8)),
    )(serve.ingress()(Replica))
    return deployment.bind(model, cache_dir, cpus_per_replica, settings)


def run(
    model: str,
    *,
    host: str,
    port: int,
    replicas: int,
    cpus_per_replica: int,
    address: str,
    cache_dir: str | None,
    settings: dict[str, Any],
    blocking: bool = True,
) -> None:
    """Start (or join, by ``address``) a Ray cluster, put Serve's proxy on ``host:port`` and deploy the replicas."""
    import ray
    from ray import serve

    from tokensift.batch.cluster import cluster_cpus, connect
    from tokensift.errors import ParameterError

    connect(address)
    cpus = cluster_cpus()
    if replicas * cpus_per_replica > cpus:
        raise ParameterError(
            f"{replicas} replicas × {cpus_per_replica} CPU need more than the cluster's {cpus} CPUs",
            option="ray_replicas",
        )
    serve.start(http_options={"host": host, "port": port}, logging_config={"log_level": "WARNING"})
    app = application(
        model, replicas=replicas, cpus_per_replica=cpus_per_replica, cache_dir=cache_dir, settings=settings
    )
    if not blocking:
        serve.run(app, name="tokensift", route_prefix="/", blocking=False)
        return
    import signal

    def _stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _stop)  # a service manager's stop: shut the replicas down too
    try:
        serve.run(app, name="tokensift", route_prefix="/", blocking=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        serve.shutdown()
        ray.shutdown()
