"""``BaselinePredictor``: scores images with a discriminative baseline (softmax, argmax, softmax entropy)."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from meddiff.config import ScoreConfig
from meddiff.data import ImageDecoder
from meddiff.device import autocast_dtype, resolve_device
from meddiff.methods.predictor import Predictor
from meddiff.models.baseline_model import BaselineModel, load_baseline_model
from meddiff.provenance import code_version


class BaselinePredictor(Predictor):
    """Scores images with a discriminative baseline: softmax probabilities, argmax prediction, softmax entropy.

    One network evaluation per image (``nfe`` 1); the vote columns, ``n_draws`` and ``rule`` stay null.
    """

    method = "baseline"

    def __init__(self, model: BaselineModel, cfg: ScoreConfig, device: torch.device | None = None) -> None:
        self.model = model
        self.cfg = cfg
        self.device = device or resolve_device(cfg.device)
        self.model.network.to(self.device).eval()
        self.decoder = ImageDecoder(model.image_size, model.channels)
        self.autocast_dtype = autocast_dtype(self.device, cfg.precision)
        self._code_version = code_version()

    _load = staticmethod(load_baseline_model)

    @torch.inference_mode()
    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, channels, image_size, image_size] in [-1, 1] -> float32 logits [B, num_classes] (on the CPU)."""
        x = pixels.to(self.device)
        if self.autocast_dtype is not None:
            with torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype):
                return self.model.network(x).float().cpu()
        return self.model.network(x).float().cpu()

    def predict_pixels(self, pixels: torch.Tensor, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Score a batch of decoded images.

        Args:
            pixels: [B, channels, image_size, image_size] in [-1, 1].
            ids: B image ids (unused by the network; kept for the interface).
        Returns: B dicts with the prediction columns of the results schema.
        """
        return self.probability_rows(torch.softmax(self.logits(pixels), dim=-1), 1)
