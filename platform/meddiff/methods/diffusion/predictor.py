"""``DiffusionPredictor``: scores images with the paper's conditional diffusion classifier (Favero et al. 2025): draws
of (t, noise) per image, one denoiser call per class and draw, the majority vote and the average rule, vote-share
uncertainty and early exit (``meddiff.diffusion.streaming``)."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from meddiff.config import ScoreConfig
from meddiff.data import ImageDecoder
from meddiff.device import resolve_device
from meddiff.diffusion.model import DiffusionModel, load_diffusion_model
from meddiff.diffusion.noise import image_seed
from meddiff.diffusion.streaming import stream_classify
from meddiff.methods.predictor import Predictor, engine_spec, stream_spec
from meddiff.provenance import code_version


class DiffusionPredictor(Predictor):
    """Scores images with a diffusion classifier: both rules, votes, uncertainty, optional per-draw errors."""

    method = "diffusion"

    def __init__(self, model: DiffusionModel, cfg: ScoreConfig, device: torch.device | None = None) -> None:
        self.model = model
        self.cfg = cfg
        self.device = device or resolve_device(cfg.device)
        self.model.denoiser.to(self.device).eval()
        self.decoder = ImageDecoder.for_model(model.image_size, model.channels, model.metadata)
        self.spec = engine_spec(cfg, self.device, model.num_classes, model.schedule, model.diffusion.time_input,
                                self.device.type == "cuda" if cfg.channels_last is None else cfg.channels_last)
        self.stream = stream_spec(cfg)
        if self.spec.channels_last:
            self.model.denoiser.to(memory_format=torch.channels_last)
        if cfg.compile:
            self.model.denoiser = torch.compile(self.model.denoiser)
        self._code_version = code_version()

    _load = staticmethod(load_diffusion_model)

    def predict_pixels(self, pixels: torch.Tensor, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Score a batch of decoded images.

        Args:
            pixels: [B, channels, image_size, image_size] in [-1, 1].
            ids: B image ids (they seed the noise).
        Returns: B dicts with the prediction columns of the results schema.
        """
        x = self.model.to_model_space(pixels.to(self.device))
        items = ((b, x[b], image_seed(self.cfg.seed, str(i))) for b, i in enumerate(ids))
        results = dict(stream_classify(self.model.denoiser, items, self.spec, self.stream))
        return [self.vote_row(results[b]) for b in range(len(ids))]
