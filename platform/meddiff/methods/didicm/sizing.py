"""DiDiCM at full size (``meddiff.methods.sizing``): the DiDiRN, one forward per training image; per scored image
one forward per reverse step (DiDiCM-CP) or at most min(chains, classes) per reverse step (DiDiCM-CL,
``meddiff.methods.didicm.process``)."""

from __future__ import annotations

from pathlib import Path

import torch

from meddiff.config import ExperimentConfig, from_dict
from meddiff.methods.didicm.net import DiDiRN, DiDiRNConfig
from meddiff.methods.didicm.train import parse_options
from meddiff.methods.sizing import SizedNetwork


def full_size(cfg: ExperimentConfig, num_classes: int, device, config_dir: Path | None = None) -> dict[str, SizedNetwork]:
    opts = parse_options(cfg.method_options)
    c, s = cfg.data.channels, cfg.data.image_size
    with torch.device(device):
        net = DiDiRN(from_dict(DiDiRNConfig, cfg.model.params, "model.params"), c, num_classes)

    def inputs(batch: int, dev) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch, c, s, s, device=dev), torch.zeros(batch, dtype=torch.long, device=dev),
                torch.full((batch,), 0.5, device=dev))

    per_step = 1 if opts.inference == "probabilities" else min(opts.chains, num_classes)
    return {"didirn": SizedNetwork(net, inputs, trained=True, train_forwards=1,
                                   score_forwards=opts.reverse_steps * per_step, ema=True)}
