"""Shifted cosine log-SNR schedule (Hoogeboom et al., "simple diffusion"), variance preserving.

    lambda(t) = -2 log tan(t_min + t (t_max - t_min)) + 2 log(base / d)
    t_min = atan(exp(-lambda_max / 2)),  t_max = atan(exp(-lambda_min / 2))
    alpha^2 = sigmoid(lambda),  sigma^2 = sigmoid(-lambda)   (so alpha^2 + sigma^2 = 1)

t = 0 is (almost) clean data, t = 1 is (almost) pure noise; lambda decreases monotonically in t. For images smaller than
``base`` the shift is positive (more signal at every t), for larger ones negative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ShiftedCosineSchedule:
    """The schedule as a pure function of t.

    Args:
        image_size: d in the shift (the official code uses the full pixel side even when the model sees wavelets).
        base: the resolution the unshifted cosine schedule is tuned for (64).
        logsnr_min, logsnr_max: the unshifted log-SNR range (paper: -15, 15).
    """

    image_size: int
    base: int = 64
    logsnr_min: float = -15.0
    logsnr_max: float = 15.0

    @property
    def shift(self) -> float:
        return 2.0 * math.log(self.base / self.image_size)

    @property
    def t_min(self) -> float:
        return math.atan(math.exp(-0.5 * self.logsnr_max))

    @property
    def t_max(self) -> float:
        return math.atan(math.exp(-0.5 * self.logsnr_min))

    def logsnr(self, t: torch.Tensor) -> torch.Tensor:
        """lambda(t) for t in [0, 1], any shape; computed in float64 for accuracy near the ends, returned as t's dtype."""
        t64 = t.to(torch.float64)
        angle = self.t_min + t64 * (self.t_max - self.t_min)
        out = -2.0 * torch.log(torch.tan(angle)) + self.shift
        return out.to(t.dtype if t.is_floating_point() else torch.float32)

    def t_of_logsnr(self, logsnr: torch.Tensor) -> torch.Tensor:
        """Inverse of ``logsnr``: the t at which the schedule reaches the given log-SNR."""
        l64 = logsnr.to(torch.float64) - self.shift
        angle = torch.atan(torch.exp(-0.5 * l64))
        return ((angle - self.t_min) / (self.t_max - self.t_min)).to(logsnr.dtype)


def alpha_sigma(logsnr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha = sqrt(sigmoid(lambda)), sigma = sqrt(sigmoid(-lambda)); same shape as ``logsnr``."""
    return torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()


def schedule_from_config(diffusion_cfg, image_size: int) -> ShiftedCosineSchedule:
    """The schedule a DiffusionConfig describes for images of ``image_size`` pixels."""
    return ShiftedCosineSchedule(
        image_size=diffusion_cfg.shift_size or image_size,
        base=diffusion_cfg.shift_base,
        logsnr_min=diffusion_cfg.logsnr_min,
        logsnr_max=diffusion_cfg.logsnr_max,
    )
