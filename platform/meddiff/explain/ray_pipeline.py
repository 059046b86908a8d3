"""The explain job on Ray Data: a pool of actors, each holding one loaded diffusion model, explains the pending shards.

Mirrors ``meddiff.scoring.ray_pipeline`` (same exactly-once shard contract, see ``meddiff.scoring.shards``):
    read_parquet(index of pending shards)               one row per shard: its id
      -> map_batches(ShardExplainer, ActorPoolStrategy) each actor loads the checkpoint once, then per shard: reads the
                                                        selected manifest slice, decodes, samples every class, writes
                                                        the PNGs and then index/shard-<k>.parquet atomically
      -> iter_rows()                                    the driver only sees tiny per-shard stats
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from meddiff.config import ExplainConfig, RayConfig, from_dict, to_dict
from meddiff.progress import Progress
from meddiff.scoring.shards import SLICES_DIR, ShardPlan

_STATS = ("shard", "images", "rows", "errors", "seconds")


class ShardExplainer:
    """Ray Data callable class: constructed once per actor (loads the model), called once per shard."""

    def __init__(self, checkpoint: str, explain_cfg: dict[str, Any], out_dir: str, index_dir: str, shard_size: int,
                 num_rows: int, ids_sha256: str, num_threads: int) -> None:
        import torch

        from meddiff.explain.job import Explainer

        if num_threads > 0:
            torch.set_num_threads(num_threads)
        self.cfg = from_dict(ExplainConfig, explain_cfg, "explain")
        self.explainer = Explainer.from_checkpoint(checkpoint, self.cfg, out_dir)
        self.plan = ShardPlan(Path(index_dir), shard_size, num_rows, ids_sha256)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from meddiff.explain.job import explain_shard

        stats = [explain_shard(self.explainer, self.plan, int(k)) for k in batch["shard"]]
        return {key: np.array([s[key] for s in stats]) for key in _STATS}


def explain_with_ray(checkpoint: str | Path, cfg: ExplainConfig, plan: ShardPlan, ray_cfg: RayConfig,
                     log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Explain the pending shards of ``plan`` (its out_dir is ``<out>/index``) on an actor pool; Ray must be
    initialised. Returns the per-shard stats."""
    import ray

    from meddiff.raycluster import cluster_has_gpus

    pending = plan.pending()
    if not pending:
        return []
    # one tiny file per pending shard: one input block per shard, so every actor of the pool gets work
    index = plan.out_dir / SLICES_DIR / f"pending-{uuid.uuid4().hex[:8]}"
    index.mkdir()
    for k in pending:
        pd.DataFrame({"shard": [k]}).to_parquet(index / f"{k:06d}.parquet", index=False)
    use_gpu = cluster_has_gpus() if ray_cfg.use_gpu is None else ray_cfg.use_gpu
    threads = 0 if use_gpu else (ray_cfg.threads_per_actor or max(1, int(ray_cfg.cpus_per_actor)))
    ds = ray.data.read_parquet(str(index), override_num_blocks=len(pending), num_cpus=0.05)
    ds = ds.map_batches(
        ShardExplainer,
        fn_constructor_kwargs={
            "checkpoint": str(Path(checkpoint).expanduser().resolve()), "explain_cfg": to_dict(cfg),
            "out_dir": str(plan.out_dir.parent), "index_dir": str(plan.out_dir), "shard_size": plan.shard_size,
            "num_rows": plan.num_rows, "ids_sha256": plan.ids_sha256, "num_threads": threads,
        },
        compute=ray.data.ActorPoolStrategy(size=ray_cfg.actors),
        batch_size=1,
        num_cpus=ray_cfg.cpus_per_actor,
        num_gpus=ray_cfg.gpus_per_actor if use_gpu else 0,
        resources=dict(ray_cfg.actor_resources) or None,
    )
    progress = Progress(plan.num_rows, "[explain] images", unit="img", every_s=10.0, start=plan.done_rows(), write=log)
    stats = []
    for row in ds.iter_rows():
        stats.append({key: row[key] for key in _STATS})
        progress.update(int(row["images"]), extra=f"{len(stats)}/{len(pending)} shards")
    shutil.rmtree(index, ignore_errors=True)
    return stats
