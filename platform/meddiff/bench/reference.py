"""The paper's classification loop, written as in its Appendix A / the official code, as the benchmark's baseline.

    for step in range(N):                       # one (t, eps) per image per draw, shared by every class
        z_t, eps = diffuse(x, t)
        for c in range(num_classes):            # one forward over the image batch per class
            errors[:, c, step] = mse(model(z_t, t, c) -> eps_hat, eps)
    votes = one-hot(argmin_c errors).sum(steps); prediction = argmax votes

Fixed N, fp32, no class batching, no early exit. It uses meddiff's seeded draws so its errors (and so its votes) can be
compared image by image with the engine's.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from meddiff.diffusion.engine import EngineSpec
from meddiff.diffusion.loss import time_input
from meddiff.diffusion.noise import draw_pairs
from meddiff.diffusion.schedule import alpha_sigma
from meddiff.diffusion.vparam import diffuse, eps_from_v


@torch.inference_mode()
def reference_errors(denoiser: nn.Module, x: torch.Tensor, img_seeds: Sequence[int], n_draws: int,
                     spec: EngineSpec) -> torch.Tensor:
    """[B, C_in, H, W] model-space images -> eps errors [B, num_classes, N], the paper's way (one class per forward)."""
    b = x.shape[0]
    errors = torch.full((b, spec.num_classes, n_draws), float("inf"), device=x.device)
    for step in range(n_draws):
        t, eps = draw_pairs(img_seeds, [step], tuple(x.shape[1:]), spec.t_min, spec.t_max, x.device,
                            spec.draws)
        t, eps = t[:, 0], eps[:, 0]
        logsnr = spec.schedule.logsnr(t)
        alpha, sigma = alpha_sigma(logsnr)
        z = diffuse(x, eps, alpha, sigma)
        time = time_input(logsnr, t, spec.time_kind)
        for c in range(spec.num_classes):
            labels = torch.full((b,), c, dtype=torch.long, device=x.device)
            v_hat = denoiser(z, time, labels)
            errors[:, c, step] = (eps_from_v(z, v_hat, alpha, sigma) - eps).pow(2).flatten(1).mean(1)
    return errors
