"""``DiDiCMPredictor``: scores images by DiDiCM's label reverse process (``meddiff.methods.didicm.train``)."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import torch

from meddiff.config import ScoreConfig
from meddiff.device import resolve_device, set_threads
from meddiff.methods.predictor import NetworkPredictor
from meddiff.methods.didicm.train import KIND, DiDiCMModel, load_didicm_model
from meddiff.models.baseline_model import BaselineModel


class DiDiCMPredictor(NetworkPredictor):
    """Scores images by the label reverse process: prob = p(c | x) (CP) or chain counts / S (CL), argmax, normalised
    entropy of prob, nfe = network evaluations per image; vote columns, ``n_draws`` and ``rule`` stay null.

    ``inference`` overrides the checkpoint's ``method_options.inference`` ("probabilities" or "labels"); the chains of
    ``labels`` mode are seeded by (``score.seed``, image id).
    """

    method = KIND

    def __init__(self, model: DiDiCMModel, cfg: ScoreConfig, device: torch.device | None = None,
                 inference: str | None = None) -> None:
        if inference is not None:
            model = replace(model, options=replace(model.options, inference=inference))
        self.didicm = model
        view = BaselineModel(model.network, model.model_cfg, model.class_names, model.image_size, model.channels,
                             model.model_id, model.metadata)
        super().__init__(view, cfg, device)
        self.max_batch = cfg.max_batch or (256 if self.device.type == "cpu" else 2048)

    _load = staticmethod(load_didicm_model)

    @classmethod
    def from_checkpoint(cls, path: str | Path, cfg: ScoreConfig, inference: str | None = None) -> "DiDiCMPredictor":
        set_threads(cfg.num_threads)
        device = resolve_device(cfg.device)
        return cls(cls._load(path, device), cfg, device, inference)

    @torch.inference_mode()
    def distribution(self, pixels: torch.Tensor, ids: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(prob [B, C] float32 on the CPU, nfe [B]) by the configured inference mode."""
        x = pixels.to(self.device)
        amp = (torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)
               if self.autocast_dtype is not None else nullcontext())
        with amp:
            if self.didicm.options.inference == "labels":
                counts, nfe = self.didicm.predict_labels(x, ids, self.cfg.seed, max_batch=self.max_batch)
                return (counts.float() / counts.sum(dim=1, keepdim=True)).cpu(), nfe
            prob, nfe = self.didicm.predict_probabilities(x, max_batch=self.max_batch)
            return prob.cpu(), nfe

    def predict_pixels(self, pixels: torch.Tensor, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Score a batch of decoded images ([B, channels, image_size, image_size] in [-1, 1]; ids seed the chains)."""
        prob, nfe = self.distribution(pixels, ids)
        return self.probability_rows(prob, [int(n) for n in nfe])


