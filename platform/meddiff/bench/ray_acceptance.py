"""The acceptance run (``bench.acceptance``) as one Ray task: on a cluster with GPUs it holds one GPU, so a job's
driver on a CPU head node still runs the check on a GPU worker; elsewhere it holds one CPU (the CPU mode)."""

from __future__ import annotations

from typing import Any, Callable

from meddiff.bench.acceptance import AcceptanceConfig, run_acceptance


def run_acceptance_on_ray(acc: AcceptanceConfig, address: str = "", log: Callable[[str], None] = print
                          ) -> dict[str, Any]:
    """Join (or start) Ray at ``address`` (``raycluster.ensure_ray``), run ``run_acceptance`` in a task with one GPU
    when the cluster has one, else one CPU; returns its result (written by the caller, on the driver's file system)."""
    import ray

    from meddiff.raycluster import ensure_ray

    started = ensure_ray(address)
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        resources = {"num_gpus": 1, "num_cpus": 1} if gpus >= 1 else {"num_cpus": 1}
        log(f"[gpu-check] Ray task with {resources} (cluster GPUs: {gpus:g})")
        task = ray.remote(max_retries=0, **resources)(run_acceptance)
        return ray.get(task.remote(acc))
    finally:
        if started:
            ray.shutdown()
