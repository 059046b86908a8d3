"""Training objective: v-prediction MSE with min-SNR weighting and classifier-free-guidance label dropout.

For one image x with class c (Favero et al. 2025, arXiv 2502.03687, section 2 and Appendix B.1; min-SNR weighting:
Hang et al. 2023):
  1. t ~ U(0, 1), eps ~ N(0, I); lambda = lambda(t); z = alpha x + sigma eps.
  2. With probability p_uncond the class is replaced by the null class (index num_classes).
  3. v_hat = denoiser(z, time(lambda), c); v = alpha eps - sigma x.
  4. loss = w(lambda) * mean((v_hat - v)^2), with the min-SNR-gamma weight for v-prediction (Hang et al. 2023):
     w = min(SNR, gamma) / (SNR + 1), SNR = exp(lambda). Since ||x_hat - x||^2 = sigma^2 ||v_hat - v||^2 and
     1 / sigma^2 = SNR + 1, this is exactly min(SNR, gamma) ||x_hat - x||^2, the min-SNR weighted x-loss.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from meddiff.diffusion.schedule import ShiftedCosineSchedule, alpha_sigma
from meddiff.diffusion.vparam import diffuse, v_target


def time_input(logsnr: torch.Tensor, t: torch.Tensor, kind: str) -> torch.Tensor:
    """What the denoiser receives as its time: the log-SNR itself (official code) or 1000 t."""
    return logsnr if kind == "logsnr" else t * 1000.0


def min_snr_weight(logsnr: torch.Tensor, gamma: float) -> torch.Tensor:
    """min(SNR, gamma) / (SNR + 1) for the v-loss; [B] -> [B]."""
    snr = torch.exp(logsnr)
    return torch.clamp(snr, max=gamma) / (snr + 1.0)


class NoisyBatch(NamedTuple):
    """One training draw per image: t, eps, lambda(t), alpha, sigma and z = alpha x + sigma eps ([B] or [B, C, H, W])."""

    t: torch.Tensor
    eps: torch.Tensor
    logsnr: torch.Tensor
    alpha: torch.Tensor
    sigma: torch.Tensor
    z: torch.Tensor


def noise_batch(x: torch.Tensor, schedule: ShiftedCosineSchedule, generator: torch.Generator | None,
                t_max: float = 1.0) -> NoisyBatch:
    """t ~ U(0, t_max) then eps ~ N(0, I) per image, from ``generator`` in that order, and the noised batch."""
    t = torch.rand(x.shape[0], generator=generator, device=x.device) * t_max
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    logsnr = schedule.logsnr(t)
    alpha, sigma = alpha_sigma(logsnr)
    return NoisyBatch(t, eps, logsnr, alpha, sigma, diffuse(x, eps, alpha, sigma))


def drop_labels(labels: torch.Tensor, p_uncond: float, num_classes: int, generator: torch.Generator | None) -> torch.Tensor:
    """Replace each label by the null class (num_classes) with probability p_uncond; [B] -> [B]."""
    if p_uncond <= 0:
        return labels
    u = torch.rand(labels.shape, generator=generator, device=labels.device)
    return torch.where(u < p_uncond, torch.full_like(labels, num_classes), labels)


def diffusion_loss(
    denoiser: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    schedule: ShiftedCosineSchedule,
    num_classes: int,
    cfg,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean weighted v-loss over the batch.

    Args:
        x: [B, C, H, W] clean inputs in model space (pixels in [-1, 1] or their Haar coefficients).
        labels: [B] class indices.
        cfg: a DiffusionConfig (time_input, loss_weight, min_snr_gamma, cfg_dropout).
        generator: seeds t, eps and the label dropout (on x's device).
    """
    t, eps, logsnr, alpha, sigma, z = noise_batch(x, schedule, generator)
    cond = drop_labels(labels, cfg.cfg_dropout, num_classes, generator)
    v_hat = denoiser(z, time_input(logsnr, t, cfg.time_input), cond)
    per_sample = (v_hat.float() - v_target(x, eps, alpha, sigma).float()).pow(2).flatten(1).mean(1)
    if cfg.loss_weight == "min_snr":
        per_sample = per_sample * min_snr_weight(logsnr, cfg.min_snr_gamma)
    return per_sample.mean()
