"""The predictor core shared by batch scoring (in-process or Ray Data actors) and the Serve endpoint.

``DiffusionPredictor`` holds a loaded model and turns manifest rows (or raw pixel batches) into results rows that follow
``meddiff.scoring.schema``. It is a plain Python object: Ray wraps it, it never imports Ray.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from meddiff.config import ScoreConfig
from meddiff.data import ImageDecoder
from meddiff.device import autocast_dtype, resolve_device, set_threads
from meddiff.diffusion.engine import EngineSpec, classify
from meddiff.diffusion.model import DiffusionModel, load_diffusion_model
from meddiff.diffusion.noise import image_seed
from meddiff.diffusion.uncertainty import vote_share
from meddiff.provenance import code_version
from meddiff.scoring import schema as S


class DiffusionPredictor:
    """Scores images with a diffusion classifier: both rules, votes, uncertainty, optional per-draw errors."""

    method = "diffusion"

    def __init__(self, model: DiffusionModel, cfg: ScoreConfig, device: torch.device | None = None) -> None:
        self.model = model
        self.cfg = cfg
        self.device = device or resolve_device(cfg.device)
        self.model.denoiser.to(self.device).eval()
        self.decoder = ImageDecoder(model.image_size, model.channels)
        self.spec = EngineSpec(
            num_classes=model.num_classes,
            schedule=model.schedule,
            time_kind=model.diffusion.time_input,
            error_target=cfg.error_target,
            t_min=cfg.t_min,
            t_max=cfg.t_max,
            max_batch=max(cfg.batch_size, 1) * model.num_classes * 8,
            autocast_dtype=autocast_dtype(self.device, cfg.precision),
        )
        self._code_version = code_version()

    @classmethod
    def from_checkpoint(cls, path: str | Path, cfg: ScoreConfig) -> "DiffusionPredictor":
        set_threads(cfg.num_threads)
        device = resolve_device(cfg.device)
        return cls(load_diffusion_model(path, device), cfg, device)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.model.class_names

    @property
    def model_id(self) -> str:
        return self.model.model_id

    def predict_pixels(self, pixels: torch.Tensor, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Score a batch of decoded images.

        Args:
            pixels: [B, channels, image_size, image_size] in [-1, 1].
            ids: B image ids (they seed the noise).
        Returns: B dicts with the prediction columns of the results schema.
        """
        x = self.model.to_model_space(pixels.to(self.device))
        seeds = [image_seed(self.cfg.seed, i) for i in ids]
        res, errors, t = classify(self.model.denoiser, x, seeds, self.cfg.n_draws, self.spec)
        share = vote_share(res.votes)
        pred = res.pred_vote if self.cfg.rule == "vote" else res.pred_average
        rows = []
        for b in range(len(ids)):
            p = int(pred[b])
            row = {
                S.PRED: p,
                S.PRED_NAME: self.class_names[p],
                S.PRED_VOTE: int(res.pred_vote[b]),
                S.PRED_AVERAGE: int(res.pred_average[b]),
                S.VOTES: res.votes[b].tolist(),
                S.PROB: share[b].tolist(),
                S.MEAN_ERROR: res.mean_error[b].tolist(),
                S.UNCERTAINTY: float(res.uncertainty[b]),
                S.N_DRAWS: self.cfg.n_draws,
                S.NFE: self.cfg.n_draws * self.model.num_classes,
                S.METHOD: self.method,
                S.RULE: self.cfg.rule,
                S.MODEL_ID: self.model_id,
                S.SEED: self.cfg.seed,
                S.STATUS: S.STATUS_OK,
                S.CODE_VERSION: self._code_version,
            }
            if self.cfg.store_draws:
                row[S.DRAW_ERRORS] = errors[b].tolist()
                row[S.DRAW_T] = t[b].tolist()
            rows.append(row)
        return rows

    def predict_rows(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Score manifest rows (id, label, split, source, path, ...): decode, predict, and mark undecodable rows as errors.

        One bad image never fails the batch: its row gets status "error" and the decoder's message.
        """
        images, errors = self.decoder.decode_batch(rows)
        good = [i for i, e in enumerate(errors) if e is None]
        out = [self._identity(row) for row in rows]
        if good:
            preds = self.predict_pixels(images[good], [str(rows[i]["id"]) for i in good])
            for i, pred in zip(good, preds):
                out[i].update(pred)
        for i, err in enumerate(errors):
            if err is not None:
                out[i].update({S.STATUS: S.STATUS_ERROR, S.ERROR: err, S.METHOD: self.method,
                               S.MODEL_ID: self.model_id, S.SEED: self.cfg.seed, S.CODE_VERSION: self._code_version})
        return out

    def _identity(self, row: dict[str, Any]) -> dict[str, Any]:
        label = row.get("label")
        label = -1 if label is None or label != label else int(label)
        return {
            S.IMAGE_ID: str(row["id"]),
            S.LABEL: label,
            S.LABEL_NAME: self.class_names[label] if 0 <= label < len(self.class_names) else None,
            S.SPLIT: row.get("split"),
            S.SOURCE: row.get("source"),
        }
