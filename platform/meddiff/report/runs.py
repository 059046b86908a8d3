"""A results set as the report sees it: its scored rows, what produced them, and its stored per-draw errors.

Every quantity is read from the results folder (parquet + meta.json, whose ``checkpoint_metadata`` carries the model
and diffusion settings), so a report can be rebuilt from results alone, without checkpoints or data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from meddiff.errors import ResultsError
from meddiff.results import schema as S
from meddiff.results.store import META_FILE, part_files, read_meta, read_results

THROUGHPUT = "throughput"  # meta.json key: {"images", "seconds", "images_per_s", "device", "threads", ...}


@dataclass
class Run:
    """One results set.

    frame: rows with status ok and a known label (the ones every metric uses).
    label: the name the report gives the run (``NAME=DIR`` on the command line, else the folder's name).
    """

    path: Path
    label: str
    meta: dict[str, Any]
    frame: pd.DataFrame
    total_rows: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return str(self.meta.get("method") or ("diffusion" if self.frame[S.PRED_VOTE].notna().all() else "baseline"))

    @property
    def is_diffusion(self) -> bool:
        """Whether the rows carry majority votes over noise draws (the paper's classifier and any registered method
        with ``votes``), which the vote-vs-average and N ablations need."""
        return bool(len(self.frame)) and bool(self.frame[S.PRED_VOTE].notna().all())

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.meta.get("class_names") or [])

    @property
    def num_classes(self) -> int:
        return len(self.class_names) or int(np.stack(self.frame[S.PROB].to_numpy()).shape[1])

    @property
    def y(self) -> np.ndarray:
        return self.frame[S.LABEL].to_numpy().astype(int)

    @property
    def has_draws(self) -> bool:
        """Stored per-draw errors and t, and the shifted-cosine schedule they were drawn under (the ablations replay
        them in log-SNR); a method with another noise schedule (e.g. Stable Diffusion's DDPM table) is left out."""
        return (self.is_diffusion and "diffusion" in self.checkpoint and self.frame[S.DRAW_ERRORS].notna().all()
                and self.frame[S.DRAW_T].notna().all())

    def draw_errors(self) -> np.ndarray:
        """[M, C, N] stored per-draw errors (target: ``score_config.error_target``)."""
        arrays = [np.stack(list(e)).astype(np.float64) for e in self.frame[S.DRAW_ERRORS]]
        sizes = {a.shape for a in arrays}
        if len(sizes) != 1:
            raise ResultsError(f"{self.path}: images carry different numbers of draws {sorted(sizes)}; the ablations "
                               f"need one N per results set")
        return np.stack(arrays)

    def draw_t(self) -> np.ndarray:
        """[M, N] the draws' t."""
        return np.stack([np.asarray(t, dtype=np.float64) for t in self.frame[S.DRAW_T]])

    @property
    def checkpoint(self) -> dict[str, Any]:
        return self.meta.get("checkpoint_metadata") or {}

    @property
    def score_config(self) -> dict[str, Any]:
        return self.meta.get("score_config") or {}

    def schedule(self):
        """The run's noise schedule, rebuilt from the checkpoint metadata in meta.json."""
        from meddiff.config import DiffusionConfig, from_dict
        from meddiff.diffusion.schedule import schedule_from_config

        ck = self.checkpoint
        if "diffusion" not in ck:
            raise ResultsError(f"{self.path}: meta.json has no checkpoint diffusion settings; cannot rebuild the schedule")
        return schedule_from_config(from_dict(DiffusionConfig, ck["diffusion"], "diffusion"), int(ck["image_size"]))

    def draw_logsnr(self) -> np.ndarray:
        import torch

        return self.schedule().logsnr(torch.from_numpy(self.draw_t())).numpy()


def load_run(spec: str | Path, count_params: bool = True) -> Run:
    """A results folder, optionally named: ``DIR`` or ``NAME=DIR``. ``count_params`` builds the architecture on the
    meta device to count its parameters (a few seconds of imports; the report's backbone column)."""
    text = str(spec)
    label, _, path = text.partition("=") if "=" in text and not Path(text).exists() else ("", "", text)
    path = Path(path).expanduser()
    if not part_files(path):
        raise ResultsError(f"{path}: not a results folder (no *.parquet); pass folders written by `meddiff score`")
    df = read_results(path)
    ok = df[(df[S.STATUS] == S.STATUS_OK) & (df[S.LABEL] >= 0)].reset_index(drop=True)
    if ok.empty:
        raise ResultsError(f"{path}: no scored rows with a known label; the report needs labelled results")
    run = Run(path=path, label=label or _default_label(path), meta=read_meta(path), frame=ok, total_rows=len(df))
    run.info = describe(run, count_params)
    return run


def _default_label(path: Path) -> str:
    return path.name if path.name not in ("results", "res") else f"{path.parent.name}/{path.name}"


def describe(run: Run, count_params: bool = True) -> dict[str, Any]:
    """Backbone, dataset, N, NFE, throughput and the training settings that matter for the ablations."""
    ck, sc = run.checkpoint, run.score_config
    model = ck.get("model") or {}
    info: dict[str, Any] = {
        "dataset": (run.meta.get("data") or {}).get("name", "?"),
        "backbone": backbone_name(model),
        "params_m": parameter_count_m(ck) if count_params else None,
        "train_steps": ck.get("step"),
        "model_id": run.meta.get("model_id"),
        "images": len(run.frame),
        "nfe_per_image": float(run.frame[S.NFE].mean()) if run.frame[S.NFE].notna().all() else None,
        "n_draws": int(run.frame[S.N_DRAWS].iloc[0]) if run.is_diffusion else None,
        "error_target": sc.get("error_target") if run.is_diffusion else None,
        "t_range": (sc.get("t_min", 0.0), sc.get("t_max", 1.0)) if run.is_diffusion else None,
    }
    if run.is_diffusion and "diffusion" in ck:
        sched = run.schedule()
        info["shift"] = sched.shift
        info["shift_size"] = sched.image_size
        info["image_size"] = ck.get("image_size")
    info.update(throughput(run))
    return info


def backbone_name(model: dict[str, Any]) -> str:
    name = str(model.get("name", "?"))
    params = model.get("params") or {}
    if "block_out_channels" in params:
        return f"{name} [{'-'.join(str(c) for c in params['block_out_channels'])}]"
    return name


def parameter_count_m(checkpoint_meta: dict[str, Any]) -> float | None:
    """Millions of parameters: recorded at training time (``parameters``, every method since it was added), else
    rebuilt from the architecture in the checkpoint metadata (on the meta device: no memory)."""
    if isinstance(checkpoint_meta.get("parameters"), int):
        return checkpoint_meta["parameters"] / 1e6
    try:
        import torch

        from meddiff.config import ModelConfig, from_dict

        model_cfg = from_dict(ModelConfig, checkpoint_meta["model"], "model")
        n_cls = len(checkpoint_meta["class_names"])
        with torch.device("meta"):
            if checkpoint_meta.get("kind") == "diffusion":
                from meddiff.models import create_denoiser

                wave = (checkpoint_meta.get("diffusion") or {}).get("wavelet", False)
                c, s = int(checkpoint_meta["channels"]), int(checkpoint_meta["image_size"])
                net = create_denoiser(model_cfg, in_channels=4 * c if wave else c, sample_size=s // 2 if wave else s,
                                      num_classes=n_cls)
            else:
                from meddiff.models import create_baseline

                net = create_baseline(model_cfg, int(checkpoint_meta["channels"]), n_cls,
                                      int(checkpoint_meta["image_size"]), load_weights=False)
        return sum(p.numel() for p in net.parameters()) / 1e6
    except Exception:  # noqa: BLE001 - a description must never fail the report
        return None


def throughput(run: Run) -> dict[str, Any]:
    """Images per second: meta.json's ``throughput`` when the scorer recorded it; otherwise estimated from the
    times of meta.json's creation and of the last shard file (``images_per_s_source`` says which; an estimate is
    wrong for a resumed run)."""
    rec = run.meta.get(THROUGHPUT) or {}
    if rec.get("images_per_s"):
        return {"images_per_s": float(rec["images_per_s"]), "images_per_s_source": "recorded",
                "device": rec.get("device")}
    created = run.meta.get("created")
    files = part_files(run.path)
    if created and files:
        try:
            start = _epoch(created)
            seconds = max(f.stat().st_mtime for f in files) - start
            if seconds > 0:
                return {"images_per_s": run.total_rows / seconds, "images_per_s_source": "estimated from file times",
                        "device": None}
        except (ValueError, OSError):
            pass
    return {"images_per_s": None, "images_per_s_source": None, "device": None}


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z").timestamp()


def record_throughput(results_dir: str | Path, images: int, seconds: float, **extra: Any) -> dict[str, Any]:
    """Add ``throughput`` {images, seconds, images_per_s, ...} to a results set's meta.json (atomic rewrite).

    For scorers that know their wall time (``score_checkpoint`` returns "scored" and "seconds").
    """
    path = Path(results_dir) / META_FILE
    meta = read_meta(results_dir)
    meta[THROUGHPUT] = {"images": int(images), "seconds": float(seconds),
                        "images_per_s": float(images) / float(seconds) if seconds > 0 else None, **extra}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=str))
    tmp.rename(path)
    return meta[THROUGHPUT]
