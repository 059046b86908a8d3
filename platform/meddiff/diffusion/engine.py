"""Diffusion classifier engine (pure torch, no Ray): per-draw errors, majority vote, average error, vote entropy.

Classification of images x over C classes (DESIGN.md section 1):
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
from meddiff.diffusion.noise import draw_pairs
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
    max_batch: int = 256
    autocast_dtype: torch.dtype | None = None


@dataclass(frozen=True)
class VoteResult:
    """Everything derived from per-draw errors [B, C, N]."""

    votes: torch.Tensor  # [B, C] int64 vote counts
    mean_error: torch.Tensor  # [B, C]
    pred_vote: torch.Tensor  # [B]
    pred_average: torch.Tensor  # [B]
    uncertainty: torch.Tensor  # [B] normalised vote entropy


def draw_errors(
    denoiser: nn.Module,
    x: torch.Tensor,
    img_seeds: Sequence[int],
    draws: Sequence[int],
    spec: EngineSpec,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-draw reconstruction errors of every class.

    Args:
        x: [B, C_in, H, W] clean inputs in model space, on the denoiser's device.
        img_seeds: B image seeds (``noise.image_seed``).
        draws: the draw indices to evaluate (e.g. range(N), or a chunk of it).
    Returns:
        errors: [B, num_classes, K] float32; t: [B, K] the draws' t.
    """
    b, k, c = x.shape[0], len(draws), spec.num_classes
    device = x.device
    t, eps = draw_pairs(img_seeds, draws, tuple(x.shape[1:]), spec.t_min, spec.t_max, device)
    logsnr = spec.schedule.logsnr(t)  # [B, K]
    alpha, sigma = alpha_sigma(logsnr)
    # flatten (image, draw) pairs: row r = b * K + k
    x_rep = x.repeat_interleave(k, dim=0)  # [B*K, ...]
    eps_f = eps.reshape((b * k,) + tuple(x.shape[1:]))
    a_f, s_f, l_f, t_f = alpha.reshape(-1), sigma.reshape(-1), logsnr.reshape(-1), t.reshape(-1)
    z = diffuse(x_rep, eps_f, a_f, s_f)
    errors = torch.empty(b * k, c, device=device)
    pairs_per_pass = max(1, spec.max_batch // c)
    classes = torch.arange(c, device=device)
    amp = (
        torch.autocast(device_type=device.type, dtype=spec.autocast_dtype)
        if spec.autocast_dtype is not None
        else nullcontext()
    )
    for start in range(0, b * k, pairs_per_pass):
        sl = slice(start, min(start + pairs_per_pass, b * k))
        n = sl.stop - sl.start
        # every class of a draw in the same forward pass, sharing z: [n*C, ...], class-minor order
        z_in = z[sl].repeat_interleave(c, dim=0)
        labels = classes.repeat(n)
        time = time_input(l_f[sl], t_f[sl], spec.time_kind).repeat_interleave(c)
        with amp:
            v_hat = denoiser(z_in, time, labels).float()
        a_in, s_in = a_f[sl].repeat_interleave(c), s_f[sl].repeat_interleave(c)
        if spec.error_target == "eps":
            pred, target = eps_from_v(z_in, v_hat, a_in, s_in), eps_f[sl].repeat_interleave(c, dim=0)
        elif spec.error_target == "x":
            pred, target = x_from_v(z_in, v_hat, a_in, s_in), x_rep[sl].repeat_interleave(c, dim=0)
        else:
            pred = v_hat
            target = v_target(x_rep[sl], eps_f[sl], a_f[sl], s_f[sl]).repeat_interleave(c, dim=0)
        errors[sl] = (pred - target).pow(2).flatten(1).mean(1).reshape(n, c)
    return errors.reshape(b, k, c).permute(0, 2, 1).contiguous(), t


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
