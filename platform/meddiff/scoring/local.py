"""In-process scoring of a manifest into a results set (the Ray Data pipeline runs the same predictor in actors)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from meddiff.config import RayConfig, ScoreConfig, TrackingConfig, to_dict
from meddiff.data import Manifest
from meddiff.errors import DataError, ResultsError
from meddiff.progress import Progress
from meddiff.provenance import code_version
from meddiff.results.runs import registry_capabilities
from meddiff.results.store import METHOD_CAPABILITIES, THROUGHPUT, read_meta, update_meta, write_meta
from meddiff.scoring.referral import load_referral
from meddiff.scoring.fingerprint import result_settings
from meddiff.scoring.shards import fresh_sibling, plan_shards, score_shard
from meddiff.scoring.tracking import log_scoring, scoring_run

FINGERPRINT = "fingerprint"  # meta.json key: {"digest", "settings"} of ``meddiff.scoring.fingerprint``


def results_meta(bundle_meta: dict[str, Any], manifest: Manifest, cfg: ScoreConfig,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """meta.json of a results set: what was scored, with which model and settings, by which code, and what the method
    can do (its registry entry's ``votes`` and ``counterfactual``; readers take it from here, see
    ``meddiff.results.runs``)."""
    meta = {
        "method": bundle_meta.get("kind"),
        METHOD_CAPABILITIES: registry_capabilities(bundle_meta.get("kind")).as_meta(),
        "model_id": bundle_meta.get("model_id"),
        "class_names": list(bundle_meta.get("class_names", [])),
        "score_config": to_dict(cfg),
        "data": {"name": manifest.name, "fingerprint": manifest.fingerprint(), "rows": len(manifest),
                 **manifest.data_checks()},
        "checkpoint_metadata": bundle_meta,
        "code_version": code_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if cfg.referral:
        meta["referral"] = load_referral(cfg.referral, bundle_meta.get("model_id")).record()
    meta.update(extra or {})
    return meta


def start_meta(out_dir: str | Path, meta: dict[str, Any]) -> None:
    """Write meta.json when a scoring job starts, keeping the throughput record of an earlier job into the folder
    until this job records its own (``finish_meta``)."""
    try:
        previous = read_meta(out_dir).get(THROUGHPUT)
    except ResultsError:  # an unreadable meta.json is rewritten whole here
        previous = None
    write_meta(out_dir, {**meta, THROUGHPUT: previous} if previous else meta)


def finish_meta(out_dir: str | Path, images: int, seconds: float, device: str, threads: int | None,
                workers: int = 1) -> dict[str, Any] | None:
    """Record this job's throughput in meta.json (``throughput``: images scored by this job, its seconds, images/s,
    device, threads per worker, workers); a job that scored nothing (everything was done) records nothing."""
    if images <= 0 or seconds <= 0:
        return None
    record = {"images": int(images), "seconds": float(seconds), "images_per_s": images / seconds,
              "device": device, "threads": threads, "workers": int(workers)}
    update_meta(out_dir, {THROUGHPUT: record})
    return record


def limited_frame(manifest: Manifest, cfg: ScoreConfig):
    return manifest.frame.iloc[: cfg.limit] if cfg.limit else manifest.frame


def score_manifest(
    predictor,
    manifest: Manifest,
    out_dir: str | Path,
    cfg: ScoreConfig,
    log: Callable[[str], None] | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score the rows of ``manifest`` in this process, shard by shard (see ``meddiff.scoring.shards``).

    Shards already written to ``out_dir`` (an interrupted run) are verified and skipped, so re-running finishes the
    rest; ``settings`` (``meddiff.scoring.fingerprint.result_settings``) tie the folder to this checkpoint and these
    settings. A job that scored images records its throughput in meta.json (``finish_meta``).
    Returns {"scored", "skipped", "errors", "seconds"}.
    """
    plan = plan_shards(limited_frame(manifest, cfg), out_dir, cfg.shard_size, settings=settings, log=log,
                       verify=True)
    start_meta(out_dir, results_meta(predictor.metadata, manifest, cfg, fingerprint_meta(plan, settings)))
    skipped = plan.done_rows()
    progress = Progress(plan.num_rows, "[score] images", unit="img", every_s=10.0, start=skipped, write=log)
    errors, scored = 0, 0
    t0 = time.monotonic()
    for shard in plan.pending():
        stats = score_shard(predictor, plan, shard, on_batch=progress.update)
        errors += stats["errors"]
        scored += stats["rows"]
    seconds = time.monotonic() - t0
    finish_meta(out_dir, scored, seconds, str(getattr(predictor, "device", "?")), _torch_threads())
    return {"scored": scored, "skipped": skipped, "errors": errors, "seconds": seconds}


def fingerprint_meta(plan, settings: dict[str, Any] | None) -> dict[str, Any]:
    """meta.json's ``fingerprint`` record (the plan keeps the authoritative copy)."""
    return {FINGERPRINT: {"digest": plan.fingerprint, "settings": settings}} if settings is not None else {}


def _torch_threads() -> int:
    """torch's intra-op threads in this process (the predictor set them from ``score.num_threads``)."""
    import torch

    return int(torch.get_num_threads())


def checkpoint_manifest(bundle_meta: dict[str, Any], data_cfg, split: str) -> Manifest:
    """The ``split`` of ``data_cfg`` decoded at the checkpoint's image size and channels, with the checkpoint's classes."""
    import dataclasses

    from meddiff.data import build_manifest

    data_cfg = dataclasses.replace(data_cfg, image_size=int(bundle_meta["image_size"]),
                                   channels=int(bundle_meta["channels"]))
    manifest = build_manifest(data_cfg).select(split)
    if tuple(manifest.class_names) != tuple(bundle_meta["class_names"]):
        raise DataError(
            f"the data's classes {manifest.class_names} differ from the checkpoint's {tuple(bundle_meta['class_names'])}; "
            f"score a data set with the classes the model was trained on"
        )
    return manifest


def score_checkpoint(checkpoint: str | Path, data_cfg, cfg: ScoreConfig, out_dir: str | Path,
                     log: Callable[[str], None] | None = None, ray_cfg: RayConfig | None = None,
                     force_new: bool = False, tracking: TrackingConfig | None = None) -> dict[str, Any]:
    """Score ``cfg.split`` of ``data_cfg`` with a checkpoint (diffusion or baseline: its metadata ``kind`` decides) into
    ``out_dir`` and return the headline metrics.

    In this process, or with ``ray_cfg`` on a Ray Data actor pool (Ray must be initialised). Both write the same
    shard files, so a folder started one way can be finished the other way. The images are decoded at the checkpoint's
    image size and channel count, whatever ``data_cfg`` says.

    A folder holding results of another checkpoint or settings is refused (``ResultsFolderInUse``); with
    ``force_new`` the job goes to the first fresh sibling ``OUT-2``, ``OUT-3``, ... instead. The summary's
    ``out_dir`` is the folder written.

    The job is an MLflow run when ``tracking`` (default: the checkpoint's training config's) is enabled
    (``meddiff.scoring.tracking``).
    """
    import dataclasses

    from meddiff.bundle import read_bundle
    from meddiff.results.summary import summarize_results
    from meddiff.results.store import read_results

    bundle = read_bundle(checkpoint)
    load_referral(cfg.referral, bundle.metadata.get("model_id"))  # refuse another model's referral before any work
    manifest = checkpoint_manifest(bundle.metadata, data_cfg, cfg.split)
    decoded = dataclasses.replace(data_cfg, image_size=int(bundle.metadata["image_size"]),
                                  channels=int(bundle.metadata["channels"]))
    settings = result_settings(bundle.metadata, cfg, decoded, manifest.fingerprint())
    if force_new:
        from meddiff.scoring.fingerprint import digest

        out_dir = fresh_sibling(out_dir, digest(settings))
    with scoring_run(bundle, cfg, decoded, out_dir, tracking, ray_cfg, log) as tracked:
        if ray_cfg is None:
            from meddiff.methods import load_predictor

            run = score_manifest(load_predictor(bundle.path, cfg), manifest, out_dir, cfg, log=log, settings=settings)
        else:
            from meddiff.scoring.ray_pipeline import score_with_ray

            run = score_with_ray(bundle.path, bundle.metadata, manifest, out_dir, cfg, ray_cfg, log=log,
                                 settings=settings)
        summary = summarize_results(read_results(out_dir), len(bundle.class_names),
                                    votes=registry_capabilities(bundle.metadata.get("kind")).votes)
        summary.update(run)
        log_scoring(tracked, summary, out_dir)
    summary["out_dir"] = str(out_dir)
    return summary
