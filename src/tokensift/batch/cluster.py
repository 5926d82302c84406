"""Joining a Ray cluster for batch jobs and Ray Serve: ``auto`` (``RAY_ADDRESS``, or a local cluster started
here) or an address, with Ray's own console chatter turned down (failures still raise)."""

from __future__ import annotations

import logging
import os
import signal
import threading

from tokensift.errors import ParameterError


def connect(address: str) -> None:
    """Connect this process to Ray at ``address`` (``auto``: ``RAY_ADDRESS`` or a new local cluster), once."""
    import ray

    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # Ray's C++ warnings on stderr
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline-safe: Ray reports nothing anywhere
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    if ray.is_initialized():
        return
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        ray.init(
            address=None if address == "auto" else address,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ParameterError(f"cannot reach the Ray cluster at {address}: {exc}", option="ray") from None
    if callable(previous):  # Ray's driver installs its own SIGTERM handler: keep the command's clean stop
        signal.signal(signal.SIGTERM, previous)


def cluster_cpus() -> int:
    """CPUs the connected cluster has."""
    import ray

    return int(ray.cluster_resources().get("CPU", 1))
