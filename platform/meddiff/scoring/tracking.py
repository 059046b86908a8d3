"""The MLflow run of a scoring job (``meddiff.tracking``): its settings, headline metrics, throughput and meta.json.

Where it goes comes from the checkpoint's training config (its ``tracking`` section, ``output_dir`` and name), so a
model's scoring runs land beside its training run unless a ``tracking`` section is given. The run's id is kept in the
results' meta.json (``tracking``), so ``meddiff report`` can add the report to it later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from meddiff import tracking
from meddiff.config import RayConfig, ScoreConfig, TrackingConfig, config_from_json, to_dict
from meddiff.provenance import code_version
from meddiff.results.store import THROUGHPUT, read_meta, update_meta



def scoring_run(bundle: Any, score_cfg: ScoreConfig, data_cfg: Any, out_dir: str | Path,
                tracking_cfg: TrackingConfig | None = None, ray_cfg: RayConfig | None = None,
                log: Callable[[str], None] | None = None) -> tracking.TrackedRun | tracking.NoRun:
    """Open the scoring job's run (``tracking.NO_RUN`` when tracking is off): ``tracking_cfg``, else the checkpoint's
    training config's; the store and default experiment are those of that training config."""
    log = log or print
    saved = bundle.metadata.get("config")
    train_cfg = config_from_json(saved) if isinstance(saved, Mapping) else None
    tc = tracking_cfg or (train_cfg.tracking if train_cfg is not None else TrackingConfig())
    if not tc.enabled:
        return tracking.NO_RUN
    output_dir = train_cfg.output_dir if train_cfg is not None else Path(out_dir).parent
    name = train_cfg.name if train_cfg is not None else str(bundle.metadata.get("model_id"))
    tags = {"meddiff.job": "score", "meddiff.method": bundle.metadata.get("kind"),
            "meddiff.model_id": bundle.metadata.get("model_id"), "meddiff.checkpoint": str(bundle.path),
            "meddiff.results": str(Path(out_dir).resolve()), "meddiff.code_version": code_version()}
    train_run = training_run_id(Path(bundle.path))
    if train_run:
        tags["meddiff.train_run"] = train_run
    params = {**tracking.flatten({"score": to_dict(score_cfg), "data": to_dict(data_cfg)}),
              "checkpoint.model_id": bundle.metadata.get("model_id"), "ray.actors": ray_cfg.actors if ray_cfg else 0}
    return tracking.open_run(tc, output_dir, name, run_name=f"score {score_cfg.split} {Path(out_dir).name}",
                             tags=tags, params=params, log=log)


def training_run_id(bundle_path: Path) -> str:
    """The MLflow run that trained a bundle, from its run folder's ``mlflow_run_id`` (``<run>/checkpoints/step_*``
    in process, ``<run>/step_*`` under Ray Train), or ""."""
    for run_dir in (bundle_path.parent, bundle_path.parent.parent):
        path = run_dir / tracking.RUN_ID_FILE
        if path.is_file():
            return path.read_text().strip()
    return ""


def log_scoring(run: tracking.TrackedRun | tracking.NoRun, summary: Mapping[str, Any], out_dir: str | Path) -> None:
    """The headline metrics, the job's counts and throughput, and meta.json (with this run's record) as artifact."""
    if not run.active:
        return
    metrics = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    throughput = read_meta(out_dir).get(THROUGHPUT) or {}
    metrics.update({f"throughput_{k}": v for k, v in throughput.items() if k in ("images", "seconds", "images_per_s")})
    run.log_metrics(metrics, step=0)
    update_meta(out_dir, {tracking.META_KEY: run.record()})
    run.log_artifact(Path(out_dir) / "meta.json", "results")
