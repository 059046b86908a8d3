"""Cohort scoring with Ray Data: a pool of actors, each holding one loaded model, scores the pending shards.

Pipeline (see ``scoring.shards`` for the exactly-once contract):
    from_items(pending shard ids)                    one block per shard, so every actor gets work
      -> map_batches(ShardScorer, ActorPoolStrategy)  each actor loads the checkpoint once, then per shard: reads the
                                                      manifest slice, decodes the images, runs the classifier engine,
                                                      writes shard-<k>.parquet atomically
      -> iter_rows()                                  the driver only sees tiny per-shard stats (progress, ETA)
Image decoding, the wavelet transform and the model run in the actors, never in the driver; the driver holds no results.
Actors restart and shard tasks retry on failure (Ray's defaults), including when a node leaves the cluster.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from meddiff.config import RayConfig, ScoreConfig, from_dict, to_dict
from meddiff.data import Manifest
from meddiff.errors import MeddiffError
from meddiff.progress import Progress
from meddiff.scoring.shards import ShardPlan, plan_shards, score_shard


class ShardScorer:
    """Ray Data callable class: constructed once per actor (loads the model), called once per shard."""

    def __init__(self, checkpoint: str, score_cfg: dict[str, Any], out_dir: str, shard_size: int, num_rows: int,
                 ids_sha256: str, num_threads: int, fingerprint: str = "") -> None:
        import torch

        from meddiff.methods import load_predictor

        if num_threads > 0:
            torch.set_num_threads(num_threads)
        self.cfg = from_dict(ScoreConfig, score_cfg, "score")
        self.predictor = load_predictor(checkpoint, self.cfg)
        self.plan = ShardPlan(Path(out_dir), shard_size, num_rows, ids_sha256, fingerprint)
        self.device = str(self.predictor.device)
        self.threads = int(torch.get_num_threads())

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        stats = [score_shard(self.predictor, self.plan, int(k)) for k in batch["shard"]]
        out = {key: np.array([s[key] for s in stats]) for key in ("shard", "rows", "errors", "seconds")}
        out["actor_pid"] = np.full(len(stats), os.getpid())
        out["device"] = np.full(len(stats), self.device)
        out["threads"] = np.full(len(stats), self.threads)
        return out


def actor_request(ray_cfg: RayConfig, num_gpus: float) -> dict[str, float]:
    """The Ray resources one actor of the pool asks for."""
    return {"CPU": ray_cfg.cpus_per_actor, "GPU": num_gpus, **dict(ray_cfg.actor_resources)}


def pool_shortfall(ray_cfg: RayConfig, num_gpus: float, total: dict[str, float]) -> str:
    """What a pool of ``ray_cfg.actors`` actors needs beyond the cluster's ``total`` resources ("" when it fits).
    Totals only: an actor also needs its share on one node, which Ray checks when it places it."""
    n = ray_cfg.actors
    return "; ".join(f"{n} x {per:g} {name} = {n * per:g} (the cluster has {total.get(name, 0):g})"
                     for name, per in actor_request(ray_cfg, num_gpus).items()
                     if per > 0 and n * per > total.get(name, 0) + 1e-9)


def shard_pool_rows(actor_cls: type, constructor_kwargs: dict[str, Any], pending: list[int],
                    ray_cfg: RayConfig, log: Callable[[str], None] | None = None) -> Iterator[dict[str, Any]]:
    """Run ``actor_cls`` (constructed once per actor with ``constructor_kwargs`` plus ``num_threads``, called with
    batches of one shard id) on a pool of ``ray_cfg.actors`` Ray Data actors; yields each shard's stats row.

    Every actor of the pool gets work: the input is one block per pending shard (``from_items``; a one-file
    ``read_parquet`` would give a single block), and no shard is handed out before all ``ray_cfg.actors`` actors are up
    with their model loaded (Ray Data's ``wait_for_min_actors_s``; by default it starts handing out shards to the first
    ready actor, which can then score a small job alone while the others still load). Ray Data then gives each shard
    to the least busy actor. A pool larger than the local embedded cluster this process started is refused at once;
    on a cluster it joined (an autoscaler may add nodes) a pool that cannot start within
    ``ray_cfg.actor_start_timeout_s`` raises ``MeddiffError`` naming the resources it asked for.
    """
    import ray

    from meddiff.raycluster import cluster_has_gpus, is_fixed_local_cluster

    use_gpu = cluster_has_gpus() if ray_cfg.use_gpu is None else ray_cfg.use_gpu
    threads = 0 if use_gpu else (ray_cfg.threads_per_actor or max(1, int(ray_cfg.cpus_per_actor)))
    num_gpus = ray_cfg.gpus_per_actor if use_gpu else 0
    short = pool_shortfall(ray_cfg, num_gpus, ray.cluster_resources())
    if short and is_fixed_local_cluster():
        raise MeddiffError(f"the actor pool needs {short} on this machine's local Ray cluster: lower --actors or "
                           f"ray.cpus_per_actor / ray.gpus_per_actor, or join a larger cluster with --address")
    if short:
        say = log or (lambda line: print(line, file=sys.stderr, flush=True))
        say(f"[ray] the pool needs {short} now; waiting up to ray.actor_start_timeout_s = "
            f"{ray_cfg.actor_start_timeout_s:g} s for the cluster to provide it")
    context = ray.data.DataContext.get_current()
    # meddiff prints its own progress (images/s, ETA); Ray Data's operator progress lines would bury it
    context.enable_progress_bars = False
    saved_wait = context.wait_for_min_actors_s
    context.wait_for_min_actors_s = math.ceil(ray_cfg.actor_start_timeout_s)
    try:  # a Dataset copies the current DataContext when it is created
        ds = ray.data.from_items([{"shard": int(k)} for k in pending], override_num_blocks=len(pending))
        ds = ds.map_batches(
            actor_cls,
            fn_constructor_kwargs={**constructor_kwargs, "num_threads": threads},
            compute=ray.data.ActorPoolStrategy(size=ray_cfg.actors),
            batch_size=1,
            num_cpus=ray_cfg.cpus_per_actor,
            num_gpus=num_gpus,
            resources=dict(ray_cfg.actor_resources) or None,
        )
    finally:
        context.wait_for_min_actors_s = saved_wait
    try:
        yield from ds.iter_rows()
    except ray.exceptions.GetTimeoutError as exc:
        each = ", ".join(f"{per} {name}" for name, per in actor_request(ray_cfg, num_gpus).items())
        raise MeddiffError(
            f"the pool of {ray_cfg.actors} actor(s) ({each} each) did not start within "
            f"ray.actor_start_timeout_s = {ray_cfg.actor_start_timeout_s:g} s; the cluster has "
            f"{ray.cluster_resources()} in all and {ray.available_resources()} free. Lower --actors or the per-actor "
            f"resources, add nodes, or raise ray.actor_start_timeout_s") from exc


def score_with_ray(
    checkpoint: str | Path,
    bundle_meta: dict[str, Any],
    manifest: Manifest,
    out_dir: str | Path,
    cfg: ScoreConfig,
    ray_cfg: RayConfig,
    log: Callable[[str], None] | None = None,
    extra_meta: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score ``manifest`` (already selected and limited) into ``out_dir`` with a Ray Data actor pool.

    ``bundle_meta`` is the checkpoint's metadata.json (for meta.json; the driver never loads the model). Ray must be
    initialised. Returns {"scored", "skipped", "errors", "seconds", "shards", "actors_used"} (actors_used: how many
    distinct actor processes scored a shard). A job that scored images records its throughput in meta.json
    (``scoring.local.finish_meta``: seconds from the pool's start, so actor start-up counts).
    """
    from meddiff.scoring.local import fingerprint_meta, finish_meta, limited_frame, results_meta, start_meta

    out_dir = Path(out_dir).expanduser().resolve()
    plan = plan_shards(limited_frame(manifest, cfg), out_dir, cfg.shard_size, settings=settings, log=log,
                       verify=True, min_shards=2 * ray_cfg.actors)
    start_meta(out_dir, results_meta(bundle_meta, manifest, cfg,
                                     {**(extra_meta or {}), **fingerprint_meta(plan, settings)}))
    pending = plan.pending()
    skipped = plan.done_rows()
    t0 = time.monotonic()
    if not pending:
        return {"scored": 0, "skipped": skipped, "errors": 0, "seconds": 0.0, "shards": 0, "actors_used": 0}
    rows = shard_pool_rows(ShardScorer, {
        "checkpoint": str(Path(checkpoint).expanduser().resolve()), "score_cfg": to_dict(cfg), "out_dir": str(out_dir),
        "shard_size": plan.shard_size, "num_rows": plan.num_rows, "ids_sha256": plan.ids_sha256,
        "fingerprint": plan.fingerprint,
    }, pending, ray_cfg, log)
    progress = Progress(plan.num_rows, "[score] images", unit="img", every_s=10.0, start=skipped, write=log)
    scored = errors = shards = 0
    actors: set[int] = set()
    devices: set[str] = set()
    threads: set[int] = set()
    first: tuple[float, int] | None = None  # (time, rows) when the first shard came back: start-up is over
    for stats in rows:
        scored += int(stats["rows"])
        errors += int(stats["errors"])
        shards += 1
        actors.add(int(stats["actor_pid"]))
        devices.add(str(stats["device"]))
        threads.add(int(stats["threads"]))
        progress.update(int(stats["rows"]), extra=f"{shards}/{len(pending)} shards")
        if first is None:
            first = (time.monotonic(), scored)
    end = time.monotonic()
    steady = (scored - first[1]) / (end - first[0]) if first and end > first[0] and scored > first[1] else None
    finish_meta(out_dir, scored, end - t0, ",".join(sorted(devices)) or "?",
                threads.pop() if len(threads) == 1 else None, workers=len(actors))
    return {"scored": scored, "skipped": skipped, "errors": errors, "seconds": end - t0, "shards": shards,
            "actors_used": len(actors), "first_shard_s": first[0] - t0 if first else None,
            "steady_images_per_s": steady}
