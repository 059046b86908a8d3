"""``meddiff demo``: train a tiny diffusion classifier, score the test split, print the headline metrics.

It runs through Ray like a cluster job: a local embedded Ray cluster is started (and stopped at the end), training runs
in a Ray Train worker and scoring on a pool of Ray Data actors. Real data when ../shared/data (or $MEDDIFF_DATA) holds
it, else built-in synthetic phantoms, so a fresh machine without data still runs end to end. Re-running continues where
an interrupted demo stopped; ``fresh=True`` starts over.

Tracking is on (``tracking.enabled``; ``--set tracking.enabled=false`` turns it off): one MLflow run ``demo <preset>``
with the training run (logged by the Ray Train worker of rank 0) and the scoring run nested under it, in
``<output_dir>/mlflow.db`` unless ``tracking.uri`` says otherwise; the last line is the ``mlflow ui`` command.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

from meddiff import tracking
from meddiff.config import data_root, load_config
from meddiff.errors import ConfigError

# dataset name -> (preset, file under the data root that must exist)
DEMOS = {
    "pneumonia": ("demo-pneumonia", "pneumoniamnist_balanced/pneumoniamnist_balanced.npz"),
    "breast": ("demo-breast", "breastmnist28/breastmnist.npz"),
    "isic": ("demo-isic", "isic_skin_180/labels.csv"),
    "phantom": ("demo-phantom", None),
}


def pick_dataset(dataset: str) -> str:
    if dataset == "auto":
        return "pneumonia" if (data_root() / DEMOS["pneumonia"][1]).is_file() else "phantom"
    if dataset not in DEMOS:
        raise ConfigError(f"demo dataset {dataset!r} is unknown; choose auto, {', '.join(DEMOS)}")
    needed = DEMOS[dataset][1]
    if needed and not (data_root() / needed).is_file():
        raise ConfigError(f"demo dataset {dataset!r} needs {data_root() / needed}; set MEDDIFF_DATA to the data folder")
    return dataset


def run_demo(dataset: str = "auto", output_dir: str = "runs", overrides: dict[str, Any] | None = None,
             fresh: bool = False) -> dict[str, Any]:
    from meddiff.results.summary import format_summary
    from meddiff.raycluster import ray_session
    from meddiff.scoring.local import score_checkpoint
    from meddiff.train.ray_trainer import fit

    name = pick_dataset(dataset)
    preset = DEMOS[name][0]
    where = "real data" if DEMOS[name][1] else "synthetic phantoms (no real data found under " f"{data_root()})"
    cfg = load_config(preset, {"output_dir": output_dir, "tracking.enabled": True, **(overrides or {})})
    run_dir = Path(cfg.run_dir)
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    print(f"[demo] {preset}: {where}; run folder {run_dir}", flush=True)
    t0 = time.monotonic()
    results = run_dir / "results" / cfg.score.split
    parent = tracking.open_run(cfg.tracking, cfg.output_dir, cfg.name, run_name=f"demo {preset}",
                               tags={"meddiff.job": "demo"}, params={"preset": preset, "data": where})
    with parent:
        if parent.active:  # the training and scoring runs nest under this one
            cfg = dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, parent_run_id=parent.run_id))
        with ray_session(cfg.ray.address):
            print(f"[demo] Ray started; training with {cfg.ray.num_workers} Ray Train worker(s), scoring with "
                  f"{cfg.ray.actors} Ray Data actor(s)", flush=True)
            bundle = fit(cfg)
            t_train = time.monotonic() - t0
            summary = score_checkpoint(bundle, cfg.data, cfg.score, results, ray_cfg=cfg.ray, tracking=cfg.tracking)
        t_total = time.monotonic() - t0
        summary.update(train_seconds=round(t_train, 1), total_seconds=round(t_total, 1), checkpoint=str(bundle),
                       results=str(results), preset=preset)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        parent.log_metrics(summary, step=0)
        parent.log_artifact(run_dir / "summary.json")
    if parent.active:
        summary["mlflow_run_id"] = parent.run_id
    print(f"\n[demo] {preset} — {cfg.score.split} split, N = {cfg.score.n_draws} draws per image")
    print(format_summary(summary))
    print(f"[demo] training {t_train:.0f} s, total {t_total:.0f} s")
    print(f"[demo] checkpoint {bundle}\n[demo] results    {results}")
    if parent.active:
        print(f"[demo] MLflow run {parent.run_id}; browse it with (the full mlflow package, see README):\n"
              f"  mlflow ui --backend-store-uri {parent.uri}")
    return summary
