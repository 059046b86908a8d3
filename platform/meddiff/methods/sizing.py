"""The interface a method implements so that ``meddiff plan`` and ``meddiff prove`` can size it at full size without
data, weights or a GPU: its registry entry names a function (``Method.sizing``)

    full_size(cfg: ExperimentConfig, num_classes: int, device, config_dir: Path | None) -> dict[str, SizedNetwork]

that builds every network the method trains or scores, at the size the config implies, on ``device`` (``meta``: no
memory, no weights). ``config_dir`` is the folder of the config file, for a method whose networks are described by
another config there (D-Cube's frozen denoiser); a method may ignore it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

Inputs = Callable[[int, "torch.device | str"], tuple[torch.Tensor, ...]]


@dataclass(frozen=True)
class SizedNetwork:
    """One network of a method at full size.

    module: the network; ``module(*inputs(batch, device))`` is one forward pass of ``batch`` images.
    inputs: (batch, device) -> the tensors one forward takes (random values, the configured shapes and dtypes).
    trained: the optimiser updates it (weights + gradients + Adam moments + EMA); False: frozen, forward only.
    train_forwards: forward passes per training image per step (0: run once per run, e.g. prompts or features
        extracted before training).
    score_forwards: forward passes per scored image at the configured scoring settings (for a diffusion classifier
        n_draws x classes; 0: run once per run, e.g. a text encoder on the class prompts).
    ema: training keeps an exponential moving average of its weights (one more float32 copy).
    note: how it was built when that differs from the run (e.g. architecture from a config, no pretrained weights).
    """

    module: nn.Module
    inputs: Inputs
    trained: bool
    train_forwards: float
    score_forwards: float
    ema: bool = False
    note: str = ""
