"""``SDPredictor``: scores images with a fine-tuned Stable Diffusion classifier through meddiff's classifier engine.

Per image: the VAE posterior mean (Li et al.) gives the latent x; then, exactly as for the paper's own classifier,
N draws (eps_k, t_k) seeded by (score seed, image id, k) and shared by all classes, per-class errors of the UNet's
noise prediction, majority vote and average rule, vote-entropy uncertainty, and the configured early exit
(``score.stopping``) from ``meddiff.diffusion.streaming``; ``meddiff.methods.sd.engine`` adapts the UNet to it. Rows fill the vote
columns; nfe = draws x classes UNet evaluations (the one VAE encoding per image is not counted).
It reuses ``DiffusionPredictor``'s row building, ``predict_rows`` and properties; only the model and the latent
encoding differ.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from meddiff.config import ScoreConfig
from meddiff.data import ImageDecoder
from meddiff.device import resolve_device
from meddiff.diffusion.noise import image_seed
from meddiff.diffusion.streaming import stream_classify
from meddiff.methods.sd.engine import PromptUNetDenoiser
from meddiff.methods.sd.model import KIND, SDModel, load_sd_model
from meddiff.provenance import code_version
from meddiff.methods.predictor import Predictor, engine_spec, stream_spec


class SDPredictor(Predictor):
    """The predictor of ``kind: sd`` bundles (same interface and rows as ``DiffusionPredictor``, method ``sd``)."""

    method = KIND

    def __init__(self, model: SDModel, cfg: ScoreConfig, device: torch.device | None = None) -> None:
        self.model = model
        self.cfg = cfg
        self.device = device or resolve_device(cfg.device)
        self.model.to(self.device)
        self.model.unet.eval()
        self.model.vae.eval()
        self.decoder = ImageDecoder.for_model(model.image_size, model.channels, model.metadata)
        self.denoiser = PromptUNetDenoiser(model.unet, model.prompt_embeds, model.schedule, model.prediction_type)
        # the adapter looks the DDPM timestep up from the log-SNR
        self.spec = engine_spec(cfg, self.device, model.num_classes, model.schedule, "logsnr", channels_last=False)
        self.stream = stream_spec(cfg)
        if cfg.compile:
            self.denoiser.unet = torch.compile(self.denoiser.unet)
        self._code_version = code_version()

    _load = staticmethod(load_sd_model)  # Predictor.from_checkpoint: cls(_load(path, device), cfg, device)

    @torch.inference_mode()
    def latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, channels, S, S] in [-1, 1] -> posterior-mean latents [B, *latent_shape] float32 on the device."""
        out = []
        amp = self.spec.autocast_dtype
        for start in range(0, pixels.shape[0], self.spec.max_batch):
            chunk = pixels[start:start + self.spec.max_batch].to(self.device)
            if amp is not None:
                with torch.autocast(device_type=self.device.type, dtype=amp):
                    out.append(self.model.encode(chunk, "mean"))
            else:
                out.append(self.model.encode(chunk, "mean"))
        return torch.cat(out)

    def predict_pixels(self, pixels: torch.Tensor, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Score a batch of decoded images.

        Args:
            pixels: [B, channels, image_size, image_size] in [-1, 1].
            ids: B image ids (they seed the noise).
        Returns: B dicts with the prediction columns of the results schema.
        """
        x = self.latents(pixels)
        items = ((b, x[b], image_seed(self.cfg.seed, str(i))) for b, i in enumerate(ids))
        results = dict(stream_classify(self.denoiser, items, self.spec, self.stream))
        return [self.vote_row(results[b]) for b in range(len(ids))]
