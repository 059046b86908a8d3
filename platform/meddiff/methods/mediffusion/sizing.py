"""Mediffusion at full size (``meddiff.methods.sizing``): the joint UNet (unconditional denoiser + classifier head on
its encoder). Training runs one encoder pass over the denoising batch and the labelled batch together and the decoder
on the first, so one forward per image is an upper bound of a step's work per image; scoring runs the head on the
clean image, i.e. the encoder only (the forward sized here is the full denoiser pass: an upper bound)."""

from __future__ import annotations

from pathlib import Path

import torch

from meddiff.config import ExperimentConfig
from meddiff.methods.mediffusion.net import JointUNet
from meddiff.methods.mediffusion.train import parse_options
from meddiff.methods.sizing import SizedNetwork
from meddiff.models.registry import model_settings


def full_size(cfg: ExperimentConfig, num_classes: int, device, config_dir: Path | None = None) -> dict[str, SizedNetwork]:
    opts = parse_options(cfg.method_options)
    c, s = cfg.data.channels, cfg.data.image_size
    shape = (4 * c, s // 2, s // 2) if cfg.diffusion.wavelet else (c, s, s)
    with torch.device(device):
        net = JointUNet(model_settings(cfg.model), shape[0], shape[1], num_classes, opts.head_hidden,
                        opts.head_dropout)

    def inputs(batch: int, dev) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch, *shape, device=dev), torch.zeros(batch, device=dev))

    return {"joint_unet": SizedNetwork(net, inputs, trained=True, train_forwards=1, score_forwards=1, ema=True,
                                       note="scoring runs the encoder only: the full forward is an upper bound")}
