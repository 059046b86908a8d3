"""A discriminative baseline at full size (``meddiff.methods.sizing``): the timm network at the configured image size
and channels, one forward per training image and per scored image."""

from __future__ import annotations

from pathlib import Path

import torch

from meddiff.config import ExperimentConfig
from meddiff.methods.sizing import SizedNetwork
from meddiff.models import create_baseline


def full_size(cfg: ExperimentConfig, num_classes: int, device, config_dir: Path | None = None) -> dict[str, SizedNetwork]:
    c, s = cfg.data.channels, cfg.data.image_size
    with torch.device(device):
        net = create_baseline(cfg.model, in_chans=c, num_classes=num_classes, image_size=s, load_weights=False)

    def inputs(batch: int, dev) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch, c, s, s, device=dev),)

    return {"classifier": SizedNetwork(net, inputs, trained=True, train_forwards=1, score_forwards=1)}
