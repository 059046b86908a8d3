"""The paper's classifier at full size (``meddiff.methods.sizing``): the class-conditional denoiser on the input the
config implies (Haar wavelet: 4 x channels at half the image side), trained once per image per step and run
n_draws x classes times per scored image (paper Algorithm 1: every draw is denoised under every class)."""

from __future__ import annotations

from pathlib import Path

import torch

from meddiff.config import ExperimentConfig
from meddiff.methods.sizing import SizedNetwork
from meddiff.models import create_denoiser


def model_input_shape(cfg: ExperimentConfig) -> tuple[int, int, int]:
    """[C, S, S] the denoiser sees: the Haar DWT of [channels, image_size, image_size] when ``diffusion.wavelet``."""
    c, s = cfg.data.channels, cfg.data.image_size
    return (4 * c, s // 2, s // 2) if cfg.diffusion.wavelet else (c, s, s)


def denoiser_inputs(shape: tuple[int, int, int], num_classes: int):
    """(batch, device) -> (z [B, C, S, S], time [B] float, labels [B] long): the denoiser call of ``meddiff.models``."""

    def inputs(batch: int, device) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch, *shape, device=device), torch.zeros(batch, device=device),
                torch.zeros(batch, dtype=torch.long, device=device))

    return inputs


def full_size(cfg: ExperimentConfig, num_classes: int, device, config_dir: Path | None = None) -> dict[str, SizedNetwork]:
    shape = model_input_shape(cfg)
    with torch.device(device):
        net = create_denoiser(cfg.model, in_channels=shape[0], sample_size=shape[1], num_classes=num_classes)
    return {"denoiser": SizedNetwork(net, denoiser_inputs(shape, num_classes), trained=True, train_forwards=1,
                                     score_forwards=cfg.score.n_draws * num_classes, ema=True)}
