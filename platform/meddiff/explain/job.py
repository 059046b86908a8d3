"""The explain job: counterfactuals of selected images of a results set, sharded like scoring (exactly once, resumable).

    <out>/explain.json          what was explained: checkpoint, results set, sampler settings, selection
    <out>/index/_plan.json      the shard plan (``meddiff.scoring.shards``): the selected manifest rows cut into shards
    <out>/index/shard-<k>.parquet  one index file per shard (``meddiff.results.explain_schema``), written by an atomic rename
    <out>/png/<image>/...       input.png, recon-<c>-<name>.png, diff-<c>-<name>.png (see ``render``)
    <out>/gallery-<p>.png       contact sheets of every explained image

Steps: 1. select images from the results set (``select``); 2. join them to the checkpoint's manifest to find their
pixels; 3. plan shards; 4. explain pending shards in this process or on a Ray Data actor pool (``ray_pipeline``); each
shard decodes its images, runs the method's counterfactual sampler for every class, writes PNGs and then its index file;
5. draw the gallery from the whole index. The checkpoint's method provides the sampler (its registry entry's
``counterfactual``: CFG for the diffusion classifier and, in latent space, for SD; classifier guidance for
Mediffusion); a method without one is refused with its reason. A re-run skips finished shards; a re-run with other
sampler settings or another model into the same folder is refused, so an index never mixes settings.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from meddiff.config import ExplainConfig, to_dict
from meddiff.data import ImageDecoder
from meddiff.durable import atomic_write_json, atomic_write_parquet
from meddiff.errors import DataError, ResultsError
from meddiff.explain import render
from meddiff.explain.select import select_images
from meddiff.methods import counterfactual_loader
from meddiff.progress import Progress
from meddiff.provenance import code_version
from meddiff.results import explain_schema as X
from meddiff.results.explanations import INDEX_DIR, META_FILE, read_index
from meddiff.scoring.shards import ShardPlan, plan_shards, read_slice

# explain.json keys that must match for a re-run to continue a folder
_SETTINGS = ("t_start", "steps", "guidance", "seed")


class Explainer:
    """Holds a method's loaded model bound to its counterfactual sampler (``meddiff.methods.explainer``); turns
    selected manifest rows into index rows and PNGs.

    A plain Python object (Ray Data actors wrap it; it never imports Ray), like ``meddiff.methods.predictor``.
    """

    def __init__(self, model, cfg: ExplainConfig, out_dir: str | Path) -> None:
        self.model = model
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.decoder = ImageDecoder.for_model(model.image_size, model.channels, getattr(model, "metadata", None))
        self._code_version = code_version()

    @classmethod
    def from_checkpoint(cls, path: str | Path, cfg: ExplainConfig, out_dir: str | Path) -> "Explainer":
        from meddiff.bundle import read_bundle
        from meddiff.device import resolve_device, set_threads

        set_threads(cfg.num_threads)
        load = counterfactual_loader(read_bundle(path).metadata.get("kind"), str(path))
        return cls(load(path, cfg, resolve_device(cfg.device)), cfg, out_dir)

    def explain_rows(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Selected manifest rows (manifest columns + pred, uncertainty, reason) -> index rows, K per decodable image;
        an undecodable image gives one error row and never fails the batch."""
        images, errors = self.decoder.decode_batch(list(rows))
        good = [i for i, e in enumerate(errors) if e is None]
        out: list[dict[str, Any]] = []
        result = None
        if good:
            result = self.model(images[good], [str(rows[i]["id"]) for i in good])
        names = self.model.class_names
        mode = render.difference_mode(self.model.channels)
        slot = {i: j for j, i in enumerate(good)}
        for i, row in enumerate(rows):
            base = self._identity(row)
            if errors[i] is not None:
                out.append({**base, X.STATUS: X.STATUS_ERROR, X.ERROR: errors[i]})
                continue
            j = slot[i]
            inp, recons, diffs, vmax = render.write_image_pngs(self.out_dir, str(row["id"]), result.inputs[j],
                                                         result.reconstructions[j], names, result.classes)
            for k, c in enumerate(result.classes):
                out.append({**base, X.CLASS: c, X.CLASS_NAME: names[c], X.FACTUAL: c == base[X.LABEL],
                            X.INPUT_PNG: inp, X.RECON_PNG: recons[k], X.DIFF_PNG: diffs[k],
                            X.RECON_ERROR: float(result.errors[j, k]), X.DIFF_MODE: mode, X.DIFF_SCALE: vmax,
                            X.STATUS: X.STATUS_OK})
        return out

    def _identity(self, row: dict[str, Any]) -> dict[str, Any]:
        label = row.get("label")
        label = -1 if label is None or label != label else int(label)
        names = self.model.class_names
        return {
            X.IMAGE_ID: str(row["id"]), X.LABEL: label, X.LABEL_NAME: names[label] if 0 <= label < len(names) else None,
            X.PRED: _int_or_none(row.get("pred")), X.UNCERTAINTY: _float_or_none(row.get("uncertainty")),
            X.REASON: row.get("reason"), X.T_START: self.cfg.t_start, X.STEPS: self.cfg.steps,
            X.GUIDANCE: self.cfg.guidance, X.SEED: self.cfg.seed, X.MODEL_ID: self.model.model_id,
            X.CODE_VERSION: self._code_version,
        }


def _int_or_none(v):
    return None if v is None or v != v else int(v)


def _float_or_none(v):
    return None if v is None or v != v else float(v)


def write_index_shard(plan: ShardPlan, shard: int, rows: list[dict[str, Any]]) -> None:
    """Write one shard's index file atomically (a retried shard overwrites the same file with the same rows)."""
    path = plan.result_file(shard)
    atomic_write_parquet(path, X.to_table(rows))


def explain_shard(explainer: Explainer, plan: ShardPlan, shard: int, on_batch: Callable[[int], None] | None = None
                  ) -> dict[str, Any]:
    """Explain one shard (in sub-batches of ``cfg.batch_size`` images) and write its index file.

    PNGs are written before the index file, so an index row always points at existing pictures.
    Returns {"shard", "images", "rows", "errors", "seconds"}.
    """
    t0 = time.monotonic()
    rows = read_slice(plan, shard)
    out: list[dict[str, Any]] = []
    bs = explainer.cfg.batch_size
    for start in range(0, len(rows), bs):
        part = rows[start : start + bs]
        out.extend(explainer.explain_rows(part))
        if on_batch is not None:
            on_batch(len(part))
    write_index_shard(plan, shard, out)
    errors = sum(r[X.STATUS] != X.STATUS_OK for r in out)
    return {"shard": shard, "images": len(rows), "rows": len(out), "errors": errors, "seconds": time.monotonic() - t0}


def selection_frame(checkpoint_meta: dict[str, Any], results_dir: str | Path, cfg: ExplainConfig,
                    data_cfg=None) -> pd.DataFrame:
    """The selected images as manifest rows (manifest columns + pred, uncertainty, reason), in selection order."""
    from meddiff.config import config_from_json
    from meddiff.scoring.local import checkpoint_manifest
    from meddiff.results.store import read_meta, read_results

    meta = read_meta(results_dir)
    if meta.get("class_names") and tuple(meta["class_names"]) != tuple(checkpoint_meta["class_names"]):
        raise DataError(f"{results_dir} was scored over classes {meta['class_names']}, the checkpoint has "
                        f"{checkpoint_meta['class_names']}; explain with a model of the same classes")
    picked = select_images(read_results(results_dir), cfg.select)
    if picked.empty:
        raise DataError(f"select {cfg.select!r} picked no images from {results_dir} (no scored rows, or no errors)")
    if data_cfg is None:
        data_cfg = config_from_json(checkpoint_meta["config"]).data
    frame = checkpoint_manifest(checkpoint_meta, data_cfg, "all").frame
    by_id = frame.assign(id=frame["id"].astype(str)).set_index("id")
    missing = [i for i in picked["image_id"] if i not in by_id.index]
    if missing:
        raise DataError(f"{len(missing)} selected ids (e.g. {missing[:3]}) are not in the checkpoint's data "
                        f"{data_cfg.source!r}; pass the data the results set was scored on (--data)")
    rows = by_id.loc[picked["image_id"]].reset_index()
    rows["label"] = picked["label"].to_numpy()  # the results set's label is what was scored
    for col in ("pred", "uncertainty", "reason"):
        rows[col] = picked[col].to_numpy()
    return rows


def check_or_write_meta(out_dir: Path, meta: dict[str, Any]) -> None:
    """Write explain.json, or check that an existing one has the same model and sampler settings."""
    path = out_dir / META_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        was = {k: old["explain_config"].get(k) for k in _SETTINGS} | {"model_id": old.get("model_id")}
        now = {k: meta["explain_config"][k] for k in _SETTINGS} | {"model_id": meta["model_id"]}
        if was != now:
            raise ResultsError(f"{out_dir} holds explanations made with {was}; this run asks for {now}. Explain into a "
                               f"new folder (or delete this one)")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, meta, default=str)


def explain_results(
    checkpoint: str | Path,
    results_dir: str | Path,
    out_dir: str | Path,
    cfg: ExplainConfig,
    data_cfg=None,
    ray_cfg=None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Explain the images ``cfg.select`` picks from ``results_dir`` with a checkpoint of a method that has
    counterfactuals into ``out_dir``.

    In this process, or with ``ray_cfg`` on a Ray Data actor pool (Ray must be initialised); both write the same
    shard files, so a folder started one way can be finished the other way.
    Returns {"images", "explained", "skipped", "errors", "seconds", "gallery"}.
    """
    from meddiff.bundle import read_bundle

    bundle = read_bundle(checkpoint)
    counterfactual_loader(bundle.metadata.get("kind"), str(bundle.path))  # refuse before selecting or writing
    out_dir = Path(out_dir).expanduser().resolve()
    frame = selection_frame(bundle.metadata, results_dir, cfg, data_cfg)
    check_or_write_meta(out_dir, {
        "model_id": bundle.model_id, "checkpoint": str(bundle.path), "results": str(Path(results_dir).resolve()),
        "class_names": list(bundle.class_names), "explain_config": to_dict(cfg), "images": len(frame),
        "code_version": code_version(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    plan = plan_shards(frame, out_dir / INDEX_DIR, cfg.shard_size)
    skipped, pending = plan.done_rows(), plan.pending()
    t0 = time.monotonic()
    if not pending:
        stats = []
    elif ray_cfg is None:
        explainer = Explainer.from_checkpoint(bundle.path, cfg, out_dir)
        progress = Progress(plan.num_rows, "[explain] images", unit="img", every_s=10.0, start=skipped, write=log)
        stats = [explain_shard(explainer, plan, k, on_batch=progress.update) for k in pending]
    else:
        from meddiff.explain.ray_pipeline import explain_with_ray

        stats = explain_with_ray(bundle.path, cfg, plan, ray_cfg, log=log)
    index = read_index(out_dir)
    title = f"{bundle.model_id}: t_start {cfg.t_start}, {cfg.steps} steps, w {cfg.guidance}, select {cfg.select}"
    gallery = render.contact_sheet(index, out_dir, title)
    return {"images": plan.num_rows, "explained": sum(s["images"] for s in stats), "skipped": skipped,
            "errors": sum(s["errors"] for s in stats), "seconds": time.monotonic() - t0,
            "gallery": [str(p) for p in gallery], "index": str(out_dir / INDEX_DIR)}
