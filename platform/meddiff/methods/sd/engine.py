"""How meddiff's classifier engine sees a Stable Diffusion UNet: the seam between the two (pure torch, no Ray).

The engine (``meddiff.diffusion.engine`` / ``streaming``) draws a continuous t in [t_min, t_max] and eps per (image,
draw), asks ``spec.schedule.logsnr(t)`` for the noise level, forms z = alpha x + sigma eps (alpha^2 = sigmoid(lambda)),
calls ``denoiser(z, lambda, labels)`` for a v-prediction and measures the error of eps_hat (or x_hat, v_hat). An SD
UNet instead predicts eps at the DDPM's integer timesteps with a prompt. Two small adapters make it fit unchanged:

- ``DiscreteLogSNR``: draw t maps to timestep k = min(floor(t T), T - 1) (uniform over the T timesteps for t in
  [0, 1], as Li et al. sample timesteps) and lambda = log(abar_k / (1 - abar_k)); then alpha^2 = abar_k and
  z = sqrt(abar_k) x + sqrt(1 - abar_k) eps is exactly DDPM's q(z_k | x).
- ``PromptUNetDenoiser``: recovers k from lambda (an exact table look-up), runs the UNet with the class's prompt
  embedding, and returns v_hat = (eps_hat - sigma z) / alpha, so the engine's eps_hat = sigma z + alpha v_hat is the
  UNet's eps (to float rounding). A v-prediction UNet's output is returned as it is (same v convention).

Everything else (shared (eps, t) across classes, seeding per image, vote, average, early exit) is the engine's.
"""

from __future__ import annotations

import torch
from torch import nn

from meddiff.diffusion.schedule import alpha_sigma
from meddiff.diffusion.vparam import expand_like


class DiscreteLogSNR:
    """DDPM's T noise levels as a schedule of t in [0, 1] (the ``schedule`` of an ``EngineSpec``)."""

    def __init__(self, alphas_cumprod: torch.Tensor) -> None:
        abar = alphas_cumprod.detach().to("cpu", torch.float64)
        if abar.ndim != 1 or not bool(((abar > 0) & (abar < 1)).all()) or not bool((abar[1:] < abar[:-1]).all()):
            raise ValueError("alphas_cumprod must be a strictly decreasing 1-D table in (0, 1)")
        self.alphas_cumprod = abar
        self.table = (torch.log(abar) - torch.log1p(-abar)).to(torch.float32)  # [T] lambda_k, decreasing

    @property
    def num_timesteps(self) -> int:
        return int(self.table.shape[0])

    def timestep(self, t: torch.Tensor) -> torch.Tensor:
        """t in [0, 1] (any shape) -> int64 timestep k in [0, T - 1]."""
        return (t.to(torch.float64) * self.num_timesteps).floor().clamp(0, self.num_timesteps - 1).long()

    def logsnr(self, t: torch.Tensor) -> torch.Tensor:
        """lambda of the timestep of t, float32, on t's device."""
        return self.table.to(t.device)[self.timestep(t)]

    def timestep_of_logsnr(self, logsnr: torch.Tensor) -> torch.Tensor:
        """Inverse look-up: [P] lambdas taken from this table -> [P] int64 timesteps."""
        table = self.table.to(logsnr.device)
        return (logsnr.float()[:, None] - table[None, :]).abs().argmin(dim=1)


class PromptUNetDenoiser(nn.Module):
    """``denoiser(z [P, 4, h, w], lambda [P], labels [P]) -> v_hat [P, 4, h, w]`` over an SD UNet.

    ``labels`` pick rows of ``prompt_embeds`` [num_classes, L, D] as the UNet's ``encoder_hidden_states``.
    """

    def __init__(self, unet: nn.Module, prompt_embeds: torch.Tensor, schedule: DiscreteLogSNR,
                 prediction_type: str = "epsilon") -> None:
        super().__init__()
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type {prediction_type!r}: expected 'epsilon' or 'v_prediction'")
        self.unet = unet
        self.schedule = schedule
        self.prediction_type = prediction_type
        self.register_buffer("prompt_embeds", prompt_embeds, persistent=False)

    def forward(self, z: torch.Tensor, logsnr: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        timesteps = self.schedule.timestep_of_logsnr(logsnr)
        context = self.prompt_embeds[labels].to(z.dtype)
        out = self.unet(z, timesteps, encoder_hidden_states=context).sample.float()
        if self.prediction_type == "v_prediction":
            return out
        alpha, sigma = alpha_sigma(logsnr.float())
        return (out - expand_like(sigma, z) * z.float()) / expand_like(alpha, z)
