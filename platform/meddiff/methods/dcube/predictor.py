"""Scores images with a D-Cube classifier: softmax probabilities of the head over the frozen diffusion model's
hyper-features, argmax prediction, normalised softmax entropy as the uncertainty.

``nfe`` is the number of denoiser passes per image (1 with the null class; C with per-class features); there are no
noise draws to vote over, so the vote columns, ``n_draws`` and ``rule`` stay null. The noise of the features is seeded
from (score seed, image id), as every meddiff result.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from meddiff.config import ScoreConfig
from meddiff.data import ImageDecoder
from meddiff.device import autocast_dtype, resolve_device
from meddiff.methods.dcube.model import KIND, DCubeModel, load_dcube_model
from meddiff.provenance import code_version
from meddiff.methods.predictor import Predictor


class DCubePredictor(Predictor):
    """The predictor interface of ``meddiff.methods.predictor`` for ``kind: dcube`` bundles."""

    method = KIND

    def __init__(self, model: DCubeModel, cfg: ScoreConfig, device: torch.device | None = None) -> None:
        self.model = model
        self.cfg = cfg
        self.device = device or resolve_device(cfg.device)
        self.model.diffusion.denoiser.to(self.device).eval()
        self.model.head.to(self.device).eval()
        self.decoder = ImageDecoder.for_model(model.diffusion.image_size, model.diffusion.channels, model.metadata)
        self.autocast_dtype = autocast_dtype(self.device, cfg.precision)
        self._code_version = code_version()

    _load = staticmethod(load_dcube_model)

    @torch.inference_mode()
    def logits(self, pixels: torch.Tensor, ids: Sequence[str]) -> torch.Tensor:
        """[B, channels, S, S] in [-1, 1] -> float32 logits [B, num_classes] on the CPU."""
        x = pixels.to(self.device)
        ids = [str(i) for i in ids]
        if self.autocast_dtype is not None:
            with torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype):
                return self.model.logits(x, ids, self.cfg.seed).cpu()
        return self.model.logits(x, ids, self.cfg.seed).cpu()

    def predict_pixels(self, pixels: torch.Tensor, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Score a batch of decoded images [B, channels, S, S] in [-1, 1]; ``ids`` seed the features' noise."""
        rows: list[dict[str, Any]] = []
        step = max(1, self.cfg.batch_size)
        for start in range(0, len(ids), step):
            logits = self.logits(pixels[start:start + step], ids[start:start + step])
            rows += self._rows(logits)
        return rows

    def _rows(self, logits: torch.Tensor) -> list[dict[str, Any]]:
        return self.probability_rows(torch.softmax(logits.float(), dim=-1), self.model.nfe)
