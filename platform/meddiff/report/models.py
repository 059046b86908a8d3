"""What the report rebuilds from a results set's checkpoint metadata with model code: the noise schedule its draws were
made under, the parameter count, and the description of a run every table shows.

``meddiff.results`` stays free of torch and model code; this module is where the report reaches into them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from meddiff.errors import ResultsError
from meddiff.results import schema as S
from meddiff.results.runs import ResultsSet


def schedule(run: ResultsSet):
    """The run's noise schedule, rebuilt from the checkpoint metadata in meta.json."""
    from meddiff.config import DiffusionConfig, from_dict
    from meddiff.diffusion.schedule import schedule_from_config

    ck = run.checkpoint
    if "diffusion" not in ck:
        raise ResultsError(f"{run.path}: meta.json has no checkpoint diffusion settings; cannot rebuild the schedule")
    return schedule_from_config(from_dict(DiffusionConfig, ck["diffusion"], "diffusion"), int(ck["image_size"]))


def logsnr(run: ResultsSet, t: np.ndarray) -> np.ndarray:
    """log-SNR of the run's schedule at ``t``."""
    import torch

    return schedule(run).logsnr(torch.from_numpy(np.asarray(t, dtype=np.float64))).numpy()


def draw_logsnr(run: ResultsSet) -> np.ndarray:
    """[M, N] log-SNR of the stored draws."""
    return logsnr(run, run.draw_t())


def backbone_name(model: dict[str, Any]) -> str:
    """The architecture's name with its channel widths when it has them, e.g. ``unet [64-128-256]``."""
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


def describe(run: ResultsSet, count_params: bool = True) -> dict[str, Any]:
    """Backbone, dataset, N, NFE, throughput and the training settings that matter for the ablations.
    ``count_params`` builds the architecture on the meta device when training did not record the count (a few seconds
    of imports; the report's backbone column)."""
    ck, sc, frame = run.checkpoint, run.score_config, run.frame
    votes = run.votes and bool(len(frame))
    speed = run.throughput()
    info: dict[str, Any] = {
        "dataset": run.dataset,
        "backbone": backbone_name(ck.get("model") or {}),
        "params_m": parameter_count_m(ck) if count_params else None,
        "train_steps": ck.get("step"),
        "model_id": run.model_id,
        "images": len(frame),
        "nfe_per_image": float(frame[S.NFE].mean()) if frame[S.NFE].notna().all() else None,
        "n_draws": int(frame[S.N_DRAWS].iloc[0]) if votes else None,
        "error_target": sc.get("error_target") if votes else None,
        "t_range": (sc.get("t_min", 0.0), sc.get("t_max", 1.0)) if votes else None,
        "images_per_s": speed.images_per_s, "images_per_s_source": speed.source, "device": speed.device,
    }
    if votes and "diffusion" in ck:
        sched = schedule(run)
        info["shift"] = sched.shift
        info["shift_size"] = sched.image_size
        info["image_size"] = ck.get("image_size")
    return info
