"""Connecting to Ray: a local embedded cluster for the demo and tests, or an existing cluster for production jobs."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator


_local_cluster = ""  # GCS address of the local embedded cluster this process started (its resources are all it has)


def ensure_ray(address: str = "", num_cpus: int | None = None, quiet: bool = True) -> bool:
    """Initialise Ray once per process; returns True when this call started it (the caller should shut it down).

    ``address``: "" -> join RAY_ADDRESS if set (a Ray job's driver), else start a local embedded cluster;
    "auto" -> the cluster this machine belongs to; "host:port" / "ray://host:10001" -> that cluster.
    """
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict = {"ignore_reinit_error": True, "log_to_driver": True}
    if quiet:
        kwargs["logging_level"] = "WARNING"
    if address:
        kwargs["address"] = address
    elif os.environ.get("RAY_ADDRESS"):
        kwargs["address"] = os.environ["RAY_ADDRESS"]
    else:
        # the dashboard serves the state API that Ray Train's placement-group cleaner polls (without it, it warns
        # every few seconds) and gives users the usual Ray dashboard for the local cluster
        kwargs["include_dashboard"] = True
        if num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
    ray.init(**kwargs)
    if "address" not in kwargs:
        global _local_cluster
        _local_cluster = ray.get_runtime_context().gcs_address
    return True


def is_fixed_local_cluster() -> bool:
    """True while Ray runs as the local embedded cluster this process started (no autoscaler can add nodes)."""
    import ray

    return ray.is_initialized() and ray.get_runtime_context().gcs_address == _local_cluster


@contextlib.contextmanager
def ray_session(address: str = "", num_cpus: int | None = None) -> Iterator[None]:
    """Ray for the duration of a block; a cluster started here is stopped at the end, an existing one is left alone."""
    import ray

    started = ensure_ray(address, num_cpus)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def stop_local_cluster(grace_s: float = 10.0) -> list[int]:
    """``ray.shutdown()`` of a cluster this process started, then terminate (SIGTERM, SIGKILL after ``grace_s``) every
    descendant process still alive: Ray leaves its dashboard and runtime-env agent running when the driver is
    stopped by a signal. Returns the pids that were still alive after SIGTERM and the grace period."""
    import ray
    import psutil

    me = psutil.Process()
    children = me.children(recursive=True)  # before shutdown: afterwards the orphans belong to init
    ray.shutdown()
    alive = [p for p in children if p.is_running()]
    _, alive = psutil.wait_procs(alive, timeout=2)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(alive, timeout=grace_s)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=grace_s)
    return [p.pid for p in alive]


def cluster_has_gpus() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0
