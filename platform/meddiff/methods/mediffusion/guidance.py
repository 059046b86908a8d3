"""Counterfactual explanations of a Mediffusion model by classifier guidance with its own head (Mediffusion section on
explanations; Dhariwal & Nichol's classifier guidance).

For an image x (pixels in [-1, 1]) and a target class c, with the pieces of ``meddiff.diffusion.counterfactual``:
  1. Noise x to t_start in model space: z = alpha x + sigma eps, eps seeded by (seed, image id) (``step_noise`` 0).
  2. For i = S, ..., 1, step from t = t_start i / S to s = t_start (i - 1) / S:
        v_hat, logits = JointUNet.denoise_and_classify(z, t)         one encoder pass feeds both
        g = grad_z log softmax(logits)[c]                             the head's gradient toward the target class
        x_hat = alpha_t z - sigma_t v_hat                             (v-prediction)
        x_tilde = x_hat + scale * sigma_t^2 / alpha_t * g             eps-space guidance eps - scale * sigma * g,
                                                                      written on x_hat
        x_tilde <- clip(x_tilde, -1, 1) in pixel space                 (as the CFG sampler)
        z_s = ancestral_step(z, x_tilde, lambda_t, lambda_s, noise_i)   the authors' ancestral step; noise seeded by
                                                                      (seed, image id, i), none into s = 0
  3. The reconstruction is z_0 in pixels; errors / difference maps as ``CounterfactualResult``.
Every class of an image starts from the same z and receives the same per-step noise, so the differences between
classes come from the guidance alone. ``scale`` 0 is the plain unconditional sampler (no gradient is computed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from meddiff.diffusion.counterfactual import CounterfactualResult, SamplerSettings, ancestral_step, step_noise
from meddiff.diffusion.loss import time_input
from meddiff.diffusion.noise import image_seed
from meddiff.diffusion.schedule import ShiftedCosineSchedule, alpha_sigma
from meddiff.diffusion.vparam import expand_like, x_from_v
from meddiff.errors import ConfigError


@dataclass(frozen=True)
class ClassifierGuidedSampler(SamplerSettings):
    """The sampler of the module docstring (settings of ``SamplerSettings``: t_start, steps, seed, max_batch);
    scale: the guidance strength s (0 = none; how much is needed depends on how sharp the head is: a tiny model on
    phantoms flips most images between 20 and 100)."""

    steps: int = 50
    scale: float = 50.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scale < 0:
            raise ConfigError(f"explain.guidance: expected a classifier-guidance scale >= 0, got {self.scale}")

    def __call__(self, model, pixels: torch.Tensor, ids: Sequence[str],
                 classes: Sequence[int] | None = None) -> CounterfactualResult:
        """Reconstruct images under every class in ``classes`` (default: all).

        Args:
            model: a ``meddiff.methods.mediffusion.train.MediffusionModel``.
            pixels: [B, channels, image_size, image_size] in [-1, 1]; ids: B image ids (they seed the noise).
        """
        classes = self.target_classes(model, classes)
        device = next(model.denoiser.parameters()).device
        recon = sample_guided(
            net=model.denoiser, schedule=model.schedule, x=model.to_model_space(pixels.to(device, torch.float32)),
            img_seeds=[image_seed(self.seed, str(i)) for i in ids], classes=classes, timesteps=self.timesteps(),
            scale=self.scale, time_kind=model.diffusion.time_input, to_pixels=model.to_pixels,
            to_model_space=model.to_model_space, max_batch=self.max_batch,
        )
        b, k = recon.shape[:2]
        rec_px = model.to_pixels(recon.flatten(0, 1)).reshape((b, k) + tuple(pixels.shape[1:])).float().cpu()
        inputs = pixels.float().cpu()
        errors = (rec_px - inputs[:, None]).pow(2).flatten(2).mean(2)
        return CounterfactualResult(inputs=inputs, classes=classes, reconstructions=rec_px, errors=errors)


def guided_x_hat(net: nn.Module, z: torch.Tensor, time: torch.Tensor, targets: torch.Tensor, alpha: torch.Tensor,
                 sigma: torch.Tensor, scale: float) -> torch.Tensor:
    """x_tilde = x_hat + scale * sigma^2 / alpha * grad_z log p(target | z) for rows z [R, C, H, W], targets [R]."""
    if scale == 0:
        with torch.no_grad():
            return x_from_v(z, net(z, time).float(), alpha, sigma)
    with torch.enable_grad():
        zg = z.detach().requires_grad_(True)
        v_hat, logits = net.denoise_and_classify(zg, time)
        logp = torch.log_softmax(logits.float(), dim=-1).gather(1, targets[:, None]).sum()
        (grad,) = torch.autograd.grad(logp, zg)
    x_hat = x_from_v(z, v_hat.detach().float(), alpha, sigma)
    return x_hat + scale * expand_like(sigma.pow(2) / alpha, z) * grad


def sample_guided(net: nn.Module, schedule: ShiftedCosineSchedule, x: torch.Tensor, img_seeds: Sequence[int],
                  classes: Sequence[int], timesteps: torch.Tensor, scale: float, time_kind: str = "logsnr",
                  to_pixels: Callable[[torch.Tensor], torch.Tensor] = lambda v: v,
                  to_model_space: Callable[[torch.Tensor], torch.Tensor] = lambda v: v,
                  max_batch: int = 256) -> torch.Tensor:
    """The sampler as a tensor function: returns z_0 [B, K, *model_shape] in model space.

    Args:
        net: a ``JointUNet`` (its weights are not changed; gradients are taken w.r.t. z only).
        x: [B, *model_shape] clean inputs in model space; img_seeds: B image seeds; classes: the K targets.
        timesteps: [S + 1] decreasing times from t_start to 0.
    """
    b, k = x.shape[0], len(classes)
    shape = tuple(x.shape[1:])
    device = x.device
    if float(timesteps[0]) == 0.0 or len(timesteps) < 2:
        return x[:, None].expand((b, k) + shape).clone()
    logsnrs = schedule.logsnr(timesteps.to(torch.float64))
    alpha0, sigma0 = alpha_sigma(logsnrs[0].float())
    eps = step_noise(img_seeds, 0, shape, device)
    z = (alpha0 * x + sigma0 * eps)[:, None].expand((b, k) + shape).reshape((b * k,) + shape).clone()
    targets = torch.tensor(classes, device=device).repeat(b)  # row r = image r // K, class classes[r % K]
    steps = len(timesteps) - 1
    for i in range(steps):
        lam_t, lam_s = logsnrs[i].float().to(device), logsnrs[i + 1].float().to(device)
        alpha_t, sigma_t = alpha_sigma(lam_t)
        time = time_input(lam_t.expand(len(z)), timesteps[i].float().to(device).expand(len(z)), time_kind)
        a, s = alpha_t.expand(len(z)), sigma_t.expand(len(z))
        x_tilde = torch.cat([
            guided_x_hat(net, z[j:j + max_batch], time[j:j + max_batch], targets[j:j + max_batch],
                         a[j:j + max_batch], s[j:j + max_batch], scale)
            for j in range(0, len(z), max_batch)
        ])
        x_tilde = to_model_space(to_pixels(x_tilde).clamp(-1.0, 1.0))
        noise = None if i == steps - 1 else step_noise(img_seeds, i + 1, shape, device).repeat_interleave(k, dim=0)
        with torch.no_grad():
            z = ancestral_step(z, x_tilde.detach(), lam_t, lam_s, noise)
    return z.reshape((b, k) + shape)


def load_counterfactuals(path, cfg, device: torch.device, model=None):
    """The Mediffusion checkpoint at ``path`` (or its already loaded joint ``model``) with the classifier-guided
    sampler of ``cfg`` (``meddiff explain``): ``cfg.guidance`` is the classifier-guidance scale s (not a CFG w: a tiny
    model on phantoms needs 20-100)."""
    from meddiff.methods.explainer import Counterfactuals
    from meddiff.methods.mediffusion.train import load_mediffusion_model

    model = model if model is not None else load_mediffusion_model(path, device)
    sampler = ClassifierGuidedSampler(t_start=cfg.t_start, steps=cfg.steps, scale=cfg.guidance, seed=cfg.seed,
                                      max_batch=max(64, cfg.batch_size * model.num_classes))
    return Counterfactuals(model, sampler)
