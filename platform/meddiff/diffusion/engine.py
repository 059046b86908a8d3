"""Diffusion classifier engine (pure torch, no Ray): per-draw errors, majority vote, average error, vote entropy.

Classification of images x over C classes (Favero et al. 2025, arXiv 2502.03687, section 2.2; Li et al. 2023):
  1. Draw N pairs (eps_k, t_k) per image, seeded by (run seed, image id, k); the same pair serves every class.
  2. error[b, c, k] = mean over pixels of (target - prediction(z_{t_k}, t_k, c))^2, where the target is eps (official
     code), x (paper eq. 4) or v. All C classes of a draw go through the denoiser in one batch with the shared z.
  3. Majority vote (Favero et al.): draw k votes for argmin_c error[b, c, k]; the prediction has the most votes (ties go
     to the lower mean error). Average (Li et al.): argmin_c mean_k error[b, c, k].
  4. Uncertainty: the entropy of the vote shares (``uncertainty.vote_entropy``).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from meddiff.diffusion.loss import time_input
from meddiff.diffusion.noise import UNIFORM, DrawScheme, pair_noise
from meddiff.diffusion.schedule import ShiftedCosineSchedule, alpha_sigma
from meddiff.diffusion.uncertainty import vote_entropy
from meddiff.diffusion.vparam import diffuse, eps_from_v, v_target, x_from_v


@dataclass(frozen=True)
class EngineSpec:
    """What the engine needs to know about a trained model and how to score with it."""

    num_classes: int
    schedule: ShiftedCosineSchedule
    time_kind: str = "logsnr"
    error_target: str = "eps"
    t_min: float = 0.0
    t_max: float = 1.0
    max_batch: int = 256  # denoiser inputs per forward pass (images x draws x classes)
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False
    draws: DrawScheme = UNIFORM  # how an image's (t, noise) draws are laid out (``noise.DrawScheme``)


@dataclass(frozen=True)
class VoteResult:
    """Everything derived from per-draw errors [B, C, N]."""

    votes: torch.Tensor  # [B, C] int64 vote counts
    mean_error: torch.Tensor  # [B, C]
    pred_vote: torch.Tensor  # [B]
    pred_average: torch.Tensor  # [B]
    uncertainty: torch.Tensor  # [B] normalised vote entropy


def pair_errors(
    denoiser: nn.Module,
    x: torch.Tensor,
    img_seeds: Sequence[int],
    draw_ids: Sequence[int],
    spec: EngineSpec,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Errors of every class for P (image, draw) pairs; the building block of every engine.

    Args:
        x: [P, C_in, H, W] clean inputs in model space (row p is the image of pair p), on the denoiser's device.
        img_seeds, draw_ids: P image seeds (``noise.image_seed``) and draw indices.
    Returns:
        errors: [P, num_classes] float32; t: [P] the draws' t.
    """
    p, c = x.shape[0], spec.num_classes
    device = x.device
    t, eps = pair_noise(img_seeds, draw_ids, tuple(x.shape[1:]), spec.t_min, spec.t_max, device, spec.draws)
    logsnr = spec.schedule.logsnr(t)
    alpha, sigma = alpha_sigma(logsnr)
    z = diffuse(x, eps, alpha, sigma)
    if spec.channels_last:
        z = z.contiguous(memory_format=torch.channels_last)
    errors = torch.empty(p, c, device=device)
    pairs_per_pass = max(1, spec.max_batch // c)
    classes = torch.arange(c, device=device)
    amp = (
        torch.autocast(device_type=device.type, dtype=spec.autocast_dtype)
        if spec.autocast_dtype is not None
        else nullcontext()
    )
    for start in range(0, p, pairs_per_pass):
        sl = slice(start, min(start + pairs_per_pass, p))
        n = sl.stop - sl.start
        # every class of a draw in the same forward pass, sharing z: [n*C, ...], class-minor order
        z_in = z[sl].repeat_interleave(c, dim=0)
        labels = classes.repeat(n)
        time = time_input(logsnr[sl], t[sl], spec.time_kind).repeat_interleave(c)
        with amp:
            v_hat = denoiser(z_in, time, labels).float()
        a_in, s_in = alpha[sl].repeat_interleave(c), sigma[sl].repeat_interleave(c)
        if spec.error_target == "eps":
            pred, target = eps_from_v(z_in, v_hat, a_in, s_in), eps[sl].repeat_interleave(c, dim=0)
        elif spec.error_target == "x":
            pred, target = x_from_v(z_in, v_hat, a_in, s_in), x[sl].repeat_interleave(c, dim=0)
        else:
            pred = v_hat
            target = v_target(x[sl], eps[sl], alpha[sl], sigma[sl]).repeat_interleave(c, dim=0)
        errors[sl] = (pred - target).pow(2).flatten(1).mean(1).reshape(n, c)
    return errors, t


def draw_errors(
    denoiser: nn.Module,
    x: torch.Tensor,
    img_seeds: Sequence[int],
    draws: Sequence[int],
    spec: EngineSpec,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-draw reconstruction errors of every class for a batch of images and a list of draws.

    Args:
        x: [B, C_in, H, W] clean inputs in model space, on the denoiser's device.
        img_seeds: B image seeds (``noise.image_seed``).
        draws: the draw indices to evaluate (e.g. range(N), or a chunk of it).
    Returns:
        errors: [B, num_classes, K] float32; t: [B, K] the draws' t.
    """
    b, k = x.shape[0], len(draws)
    seeds = [s for s in img_seeds for _ in range(k)]
    ids = [d for _ in range(b) for d in draws]
    errors, t = pair_errors(denoiser, x.repeat_interleave(k, dim=0), seeds, ids, spec)
    return errors.reshape(b, k, -1).permute(0, 2, 1).contiguous(), t.reshape(b, k)


def count_votes(errors: torch.Tensor) -> torch.Tensor:
    """[B, C, N] errors -> [B, C] number of draws for which each class had the lowest error."""
    winners = errors.argmin(dim=1)  # [B, N]
    return torch.nn.functional.one_hot(winners, errors.shape[1]).sum(dim=1)


def vote_prediction(votes: torch.Tensor, mean_error: torch.Tensor) -> torch.Tensor:
    """Most votes wins; among tied classes the lower mean error wins. [B, C], [B, C] -> [B]."""
    top = votes.max(dim=1, keepdim=True).values
    masked = torch.where(votes == top, mean_error, torch.full_like(mean_error, float("inf")))
    return masked.argmin(dim=1)


def summarize(errors: torch.Tensor) -> VoteResult:
    """Both rules and the uncertainty from per-draw errors [B, C, N]."""
    votes = count_votes(errors)
    mean_error = errors.mean(dim=2)
    return VoteResult(
        votes=votes,
        mean_error=mean_error,
        pred_vote=vote_prediction(votes, mean_error),
        pred_average=mean_error.argmin(dim=1),
        uncertainty=vote_entropy(votes),
    )


@torch.inference_mode()
def classify(
    denoiser: nn.Module, x: torch.Tensor, img_seeds: Sequence[int], n_draws: int, spec: EngineSpec
) -> tuple[VoteResult, torch.Tensor, torch.Tensor]:
    """Full-N classification of a batch; returns (summary, errors [B, C, N], t [B, N])."""
    errors, t = draw_errors(denoiser, x, img_seeds, range(n_draws), spec)
    return summarize(errors), errors, t
