"""The explain job on Ray Data: a pool of actors, each holding one loaded diffusion model, explains the pending shards.

Mirrors ``meddiff.scoring.ray_pipeline`` (same exactly-once shard contract, see ``meddiff.scoring.shards``):
    from_items(pending shard ids)                       one block per shard, so every actor gets work
      -> map_batches(ShardExplainer, ActorPoolStrategy) each actor loads the checkpoint once, then per shard: reads the
                                                        selected manifest slice, decodes, samples every class, writes
                                                        the PNGs and then index/shard-<k>.parquet atomically
      -> iter_rows()                                    the driver only sees tiny per-shard stats
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from meddiff.config import ExplainConfig, RayConfig, from_dict, to_dict
from meddiff.progress import Progress
from meddiff.scoring.ray_pipeline import shard_pool_rows
from meddiff.scoring.shards import ShardPlan

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
    pending = plan.pending()
    if not pending:
        return []
    rows = shard_pool_rows(ShardExplainer, {
        "checkpoint": str(Path(checkpoint).expanduser().resolve()), "explain_cfg": to_dict(cfg),
        "out_dir": str(plan.out_dir.parent), "index_dir": str(plan.out_dir), "shard_size": plan.shard_size,
        "num_rows": plan.num_rows, "ids_sha256": plan.ids_sha256,
    }, pending, ray_cfg, log)
    progress = Progress(plan.num_rows, "[explain] images", unit="img", every_s=10.0, start=plan.done_rows(), write=log)
    stats = []
    for row in rows:
        stats.append({key: row[key] for key in _STATS})
        progress.update(int(row["images"]), extra=f"{len(stats)}/{len(pending)} shards")
    return stats
