"""In-process scoring of a manifest into a results set (the Ray Data pipeline runs the same predictor in actors)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from meddiff.config import ScoreConfig, to_dict
from meddiff.data import Manifest
from meddiff.progress import Progress
from meddiff.provenance import code_version
from meddiff.scoring.results import ResultsWriter, scored_ids, write_meta


def results_meta(predictor, manifest: Manifest, cfg: ScoreConfig, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """meta.json of a results set: what was scored, with which model and settings, by which code."""
    meta = {
        "method": predictor.method,
        "model_id": predictor.model_id,
        "class_names": list(predictor.class_names),
        "score_config": to_dict(cfg),
        "data": {"name": manifest.name, "fingerprint": manifest.fingerprint(), "rows": len(manifest)},
        "checkpoint_metadata": getattr(getattr(predictor, "model", None), "metadata", None),
        "code_version": code_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    meta.update(extra or {})
    return meta


def score_manifest(
    predictor,
    manifest: Manifest,
    out_dir: str | Path,
    cfg: ScoreConfig,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Score every row of ``manifest`` not yet in ``out_dir``; returns {"scored", "skipped", "errors", "seconds"}.

    Rows already present in ``out_dir`` (from an interrupted run) are skipped, so re-running finishes the rest.
    """
    out_dir = Path(out_dir)
    frame = manifest.frame
    if cfg.limit:
        frame = frame.iloc[: cfg.limit]
    done = scored_ids(out_dir)
    todo = frame[~frame["id"].astype(str).isin(done)].to_dict("records")
    write_meta(out_dir, results_meta(predictor, manifest, cfg))
    writer = ResultsWriter(out_dir)
    progress = Progress(len(todo), "[score] images", unit="img", every_s=10.0, write=log)
    errors = 0
    t0 = time.monotonic()
    for start in range(0, len(todo), cfg.batch_size):
        rows = predictor.predict_rows(todo[start : start + cfg.batch_size])
        errors += sum(r["status"] != "ok" for r in rows)
        writer.add(rows)
        progress.update(len(rows))
    writer.close()
    return {"scored": len(todo), "skipped": len(done), "errors": errors, "seconds": time.monotonic() - t0}


def score_checkpoint(checkpoint: str | Path, data_cfg, cfg: ScoreConfig, out_dir: str | Path,
                     log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Load a checkpoint, score ``cfg.split`` of ``data_cfg`` into ``out_dir`` and return the headline metrics.

    The images are decoded at the checkpoint's image size and channel count, whatever ``data_cfg`` says.
    """
    import dataclasses

    from meddiff.data import build_manifest
    from meddiff.metrics import summarize_results
    from meddiff.scoring.predictor import DiffusionPredictor
    from meddiff.scoring.results import read_results

    predictor = DiffusionPredictor.from_checkpoint(checkpoint, cfg)
    data_cfg = dataclasses.replace(data_cfg, image_size=predictor.model.image_size, channels=predictor.model.channels)
    manifest = build_manifest(data_cfg).select(cfg.split)
    if tuple(manifest.class_names) != tuple(predictor.class_names):
        raise ValueError(
            f"the data's classes {manifest.class_names} differ from the checkpoint's {predictor.class_names}; "
            f"score a data set with the classes the model was trained on"
        )
    run = score_manifest(predictor, manifest, out_dir, cfg, log=log)
    summary = summarize_results(read_results(out_dir), len(predictor.class_names))
    summary.update(run)
    return summary
