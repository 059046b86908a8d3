"""Run a grouped k-fold cross-validation: per fold a Ray Train run, its test and val splits scored by Ray Data jobs,
then the pooled out-of-fold sets (``cv/pool.py``) and ``cv_summary.json`` / ``cv_summary.md`` (``cv/summary.py``).

Layout under ``out``::

    fold-<k>/            the fold's training run (Ray Train's step_* bundles, or checkpoints/ in process)
    fold-<k>/results/    its test split scored (the fold's out-of-fold rows)
    fold-<k>/val/        its val split scored (calibration data for referral thresholds)
    oof/, oof_val/       the pooled results sets
    cv_summary.json, cv_summary.md

Resumable fold by fold: a fold whose final bundle (``train.steps``) and both complete results sets exist is skipped;
otherwise training resumes from its newest bundle's ``train_state/`` (``meddiff.train.ray_trainer``: Ray Train's
checkpoint of a run of the same name) and scoring from its written shards (``meddiff.scoring.shards``).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

from meddiff.bundle import list_bundles, read_bundle, resumable_bundle, step_of
from meddiff.config import ExperimentConfig, RayConfig, to_dict
from meddiff.cv.pool import pool_folds
from meddiff.cv.summary import format_table, mean_sd, pooled_intervals, run_figures
from meddiff.durable import atomic_write_json, atomic_write_text
from meddiff.errors import CheckpointError, ConfigError
from meddiff.provenance import code_version
from meddiff.results.runs import open_results

SPLIT_DIRS = {"test": "results", "val": "val"}
SUMMARY_JSON = "cv_summary.json"
SUMMARY_MD = "cv_summary.md"


def fold_config(cfg: ExperimentConfig, folds: int, fold: int, out_dir: Path) -> ExperimentConfig:
    """The experiment of fold ``fold``: ``data.cv_folds = folds``, ``data.cv_fold = fold``, run ``out/fold-<k>``."""
    data = dataclasses.replace(cfg.data, cv_folds=folds, cv_fold=fold)
    return dataclasses.replace(cfg, data=data, name=f"fold-{fold}", output_dir=str(out_dir))


def final_bundle(run_dir: Path, steps: int) -> Path | None:
    """The whole bundle of the last training step in a fold's run folder (Ray Train's or an in-process run's), or
    None when training has not finished."""
    for folder in (run_dir, run_dir / "checkpoints"):
        for bundle in reversed(list_bundles(folder)):
            if step_of(bundle.name) >= steps and resumable_bundle(bundle):
                return bundle
    return None


def results_complete(bundle: Path, cfg: ExperimentConfig, split: str, out_dir: Path) -> bool:
    """Whether ``out_dir`` holds every shard of ``split`` scored with the fold's settings."""
    from meddiff.scoring.local import checkpoint_manifest
    from meddiff.scoring.shards import PLAN_FILE, plan_shards

    if not (out_dir / PLAN_FILE).is_file():
        return False
    manifest = checkpoint_manifest(read_bundle(bundle).metadata, cfg.data, split)
    return not plan_shards(manifest.frame, out_dir, cfg.score.shard_size, verify=True).pending()


def check_cv(cfg: ExperimentConfig, folds: int) -> None:
    """ConfigError unless ``folds`` >= 2 and every row is scored (``score.limit`` 0)."""
    if folds < 2:
        raise ConfigError(f"--folds: expected an integer >= 2, got {folds}")
    if cfg.score.limit:
        raise ConfigError(f"score.limit: expected 0 for cross-validation (every row is scored out of fold exactly "
                          f"once), got {cfg.score.limit}")


def run_fold(cfg: ExperimentConfig, folds: int, fold: int, out_dir: Path, ray_cfg: RayConfig,
             log: Callable[[str], None]) -> Path:
    """Train (or resume) and score fold ``fold``; returns the fold's final bundle."""
    from meddiff.scoring.local import score_checkpoint
    from meddiff.train.ray_trainer import train

    fcfg = fold_config(cfg, folds, fold, out_dir)
    run_dir = out_dir / fcfg.name
    tag = f"[cv] fold {fold + 1}/{folds}"
    bundle = final_bundle(run_dir, cfg.train.steps)
    if bundle is not None and all(results_complete(bundle, fcfg, s, run_dir / d) for s, d in SPLIT_DIRS.items()):
        log(f"{tag}: done earlier (bundle {bundle.name}, test and val scored); skipped")
        return bundle
    if bundle is None:
        where = "Ray Train" if fcfg.ray.num_workers else "this process"
        resumed = any(list_bundles(run_dir)) or any(list_bundles(run_dir / "checkpoints"))
        log(f"{tag}: training {cfg.train.steps} steps with {where} into {run_dir}"
            + (" (resuming from its newest checkpoint)" if resumed else ""))
        train(fcfg)
        bundle = final_bundle(run_dir, cfg.train.steps)
        if bundle is None:
            raise CheckpointError(f"{run_dir}: training finished without a whole bundle at step {cfg.train.steps} "
                                  f"(expected step_{cfg.train.steps:07d} with its train_state/)")
    else:
        log(f"{tag}: trained earlier ({bundle.name})")
    for split, sub in SPLIT_DIRS.items():
        target = run_dir / sub
        if results_complete(bundle, fcfg, split, target):
            log(f"{tag}: {split} split scored earlier ({target}); skipped")
            continue
        log(f"{tag}: scoring the {split} split with a Ray Data pool of {ray_cfg.actors} actor(s) into {target}")
        score_cfg = dataclasses.replace(fcfg.score, split=split)
        score_checkpoint(bundle, fcfg.data, score_cfg, target, log=log, ray_cfg=ray_cfg)
    return bundle


def positive_index(class_names: tuple[str, ...] | list[str], positive: str | None) -> int:
    """Index of the disease class ``positive`` (sensitivity = its recall); None: class 1, as ``meddiff report``."""
    names = list(class_names)
    if positive is None:
        return 1
    if positive not in names:
        raise ConfigError(f"--positive: expected one of the classes {names}, got {positive!r}")
    return names.index(positive)


def fold_checks(manifest, cfg: ExperimentConfig) -> dict[str, Any]:
    """The manifest's data checks with the leakage checks run across the *folds* (every fold is some model's test
    set, so a duplicate in two folds is a test image whose copy trained the model that scored it): ``leakage``
    is ``meddiff.data.leakage.check_leakage`` with the fold as the split."""
    from meddiff.data.leakage import check_leakage

    by_fold = manifest.frame.assign(split=[f"fold-{int(k)}" for k in manifest.frame["fold"]])
    leakage = check_leakage(by_fold, cfg.data.leakage_check)
    for block in leakage.values():  # every image is the test image of one fold
        if isinstance(block, dict) and "test_images_involved" in block:
            block["test_images_involved"] = block["images_involved"]
    return {**manifest.data_checks(), "leakage": {**leakage, "across": "folds"}}


def run_cv(cfg: ExperimentConfig, folds: int, out_dir: str | Path, ray_cfg: RayConfig | None = None,
           log: Callable[[str], None] = print, n_boot: int = 1000, positive: str | None = None) -> dict[str, Any]:
    """K-fold cross-validation of ``cfg`` into ``out_dir`` (see the module docstring); returns the summary written to
    ``cv_summary.json`` (its ``table`` is the markdown of ``cv_summary.md``).

    ``ray_cfg``: the scoring pool (default: ``cfg.ray``); training uses ``cfg.ray``. Ray must be initialised (or
    ``meddiff.raycluster.ray_session``) for the scoring jobs.
    """
    from meddiff.data import build_manifest

    check_cv(cfg, folds)
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    ray_cfg = ray_cfg or cfg.ray
    t0 = time.monotonic()
    manifest = build_manifest(dataclasses.replace(cfg.data, cv_folds=folds, cv_fold=0))
    pos = positive_index(manifest.class_names, positive)  # checked before any fold trains
    log(f"[cv] {folds} stratified group folds of {manifest.name}: {len(manifest)} images"
        f" (groups: {manifest.grouping}), split seed {cfg.data.split_seed}")
    for k in range(folds):
        run_fold(cfg, folds, k, out, ray_cfg, log)

    log(f"[cv] pooling the out-of-fold rows into {out / 'oof'} and {out / 'oof_val'}")
    test_dirs = [out / f"fold-{k}" / SPLIT_DIRS["test"] for k in range(folds)]
    per_fold = []
    for k, d in enumerate(test_dirs):
        run = open_results(d, name=f"fold-{k}")
        per_fold.append({"fold": k, "model_id": run.model_id, **run_figures(run, positive=pos)})
    cv_block = {"folds": folds, "seed": cfg.data.split_seed, "grouping": manifest.grouping,
                "per_fold": per_fold}
    data_block = {"name": manifest.name, "fingerprint": manifest.fingerprint(), **fold_checks(manifest, cfg)}
    pool_folds(test_dirs, out / "oof", cv_block, expected_ids=manifest.frame["id"].astype(str).tolist(),
               data=data_block)
    pool_folds([out / f"fold-{k}" / SPLIT_DIRS["val"] for k in range(folds)], out / "oof_val", cv_block,
               data=data_block, model_fold=True)
    pooled_run = open_results(out / "oof", name="oof")
    summary = {
        "folds": per_fold,
        "mean_sd": mean_sd(per_fold),
        "pooled": run_figures(pooled_run, positive=pos),
        "pooled_ci": pooled_intervals(pooled_run, positive=pos, n_boot=n_boot, seed=cfg.score.seed),
        "positive_class": list(manifest.class_names)[pos] if len(manifest.class_names) == 2 else None,
        "n_boot": n_boot,
        "method": pooled_run.method,
        "class_names": list(pooled_run.class_names),
        "data": data_block,
        "cv": {"folds": folds, "seed": cfg.data.split_seed},
        "config": to_dict(cfg),
        "code_version": code_version(),
        "seconds": time.monotonic() - t0,
    }
    summary["table"] = format_table(summary)
    atomic_write_json(out / SUMMARY_JSON, summary, default=str)
    atomic_write_text(out / SUMMARY_MD, _markdown(summary))
    log(f"[cv] summary: {out / SUMMARY_MD}")
    return summary


def _markdown(summary: dict[str, Any]) -> str:
    positive = summary["positive_class"]
    lines = [f"# Cross-validation: {summary['method']} on {summary['data']['name']}", "",
             f"{summary['cv']['folds']} stratified group folds (split seed {summary['cv']['seed']}); each row scored "
             f"once, by the model that did not see its group. Rule: {summary['pooled'].get('rule')}."
             + (f" Sensitivity and specificity with {positive!r} as the positive class." if positive else ""),
             f"Pooled 95 % CIs: percentile bootstrap over images ({summary['n_boot']} resamples); mean ± sd across "
             f"folds (sample sd).", "", summary["table"], ""]
    return "\n".join(lines)
