"""Counterfactual explanations: noise an image part-way, then denoise it under each class with classifier-free guidance.

Favero et al. 2025 (arXiv 2502.03687), section 4.3 and Appendix F. For an image x (pixels in [-1, 1]) and a target
class c:
  1. Noise x to t_start (paper: 0.5 chest X-ray, 0.3 skin) in model space (the Haar DWT when the model uses wavelets):
        z_{t_start} = alpha_{t_start} x + sigma_{t_start} eps,   eps ~ N(0, I) seeded by (seed, image id).
  2. For i = S, S-1, ..., 1, step from t = t_start i / S to s = t_start (i - 1) / S (S = ``steps``, paper figures: 256):
        v_hat(z, c), v_hat(z, null)                          one denoiser forward for every class and the null class
        x_hat(z, c) = alpha_t z - sigma_t v_hat(z, c)         (v-prediction)
        x_tilde = (1 + w) x_hat(z, c) - w x_hat(z, null)      classifier-free guidance on x_hat (paper w = 7.5)
        x_tilde <- clip(x_tilde, -1, 1)                        in pixel space (see below)
        c_ts  = -expm1(lambda_t - lambda_s)                   (the authors' ancestral step; lambda = log-SNR)
        mean  = alpha_s (z (1 - c_ts) / alpha_t + c_ts x_tilde)
        var   = sigma_s^2 c_ts
        z_s   = mean + sqrt(var) eps_i                         eps_i seeded by (seed, image id, step i);
                                                               the last step (s = 0) takes the mean, no noise
  3. The reconstruction is z_0 in pixels (inverse Haar DWT); the difference map is reconstruction - input and the
     reconstruction error is the mean squared difference over pixels.

The reconstruction under the true class is the *factual*; under the other classes the *counterfactuals*. Every class
of an image starts from the same z_{t_start} and receives the same per-step noise, so the differences between
classes come from the class alone; noise depends only on (seed, image id), never on the batch, so the same seed gives
the same image however images are batched or sharded.

Clipping: the authors clip x_hat to [-1, 1], the data range. With wavelets our model space holds unscaled orthonormal
Haar coefficients (the approximation band spans [-2, 2]), so the clip is applied to the pixels: x_tilde is mapped to
pixels, clipped and mapped back, which is exactly the projection onto the valid images (the transform is orthonormal).
t_start = 0 returns the input unchanged (nothing is noised, no step is taken).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from meddiff.diffusion.loss import time_input
from meddiff.diffusion.noise import draw_seed, image_seed
from meddiff.diffusion.schedule import ShiftedCosineSchedule, alpha_sigma
from meddiff.diffusion.vparam import x_from_v
from meddiff.errors import ConfigError


@dataclass(frozen=True)
class CounterfactualResult:
    """Reconstructions of B images under K classes (pixels, on the CPU).

    inputs: [B, C, H, W] the input images in [-1, 1].
    classes: the K class indices, in the order of the second axis below.
    reconstructions: [B, K, C, H, W] in [-1, 1].
    errors: [B, K] mean squared error between reconstruction and input.
    """

    inputs: torch.Tensor
    classes: tuple[int, ...]
    reconstructions: torch.Tensor
    errors: torch.Tensor

    @property
    def differences(self) -> torch.Tensor:
        """[B, K, C, H, W] signed difference reconstruction - input (what the class added (+) or removed (-))."""
        return self.reconstructions - self.inputs[:, None]


@dataclass(frozen=True)
class SamplerSettings:
    """What every counterfactual sampler of meddiff shares (this CFG sampler, Mediffusion's classifier-guided one, SD's
    latent one): how far the input is noised (``t_start`` in [0, 1]; 0 returns the input), the number of steps S,
    the run seed (an image's noise depends on (seed, image id) only) and the most rows per network call."""

    t_start: float = 0.5
    steps: int = 256
    seed: int = 0
    max_batch: int = 256

    def __post_init__(self) -> None:
        if not 0.0 <= self.t_start <= 1.0:
            raise ConfigError(f"explain.t_start: expected a value in [0, 1] (paper: 0.5 chest X-ray, 0.3 skin), got "
                              f"{self.t_start}")
        if self.steps < 1:
            raise ConfigError(f"explain.steps: expected a positive number of sampling steps (paper: 256), got "
                              f"{self.steps}")
        if self.max_batch < 1:
            raise ConfigError(f"max_batch: expected a positive integer, got {self.max_batch}")

    def timesteps(self) -> torch.Tensor:
        """[S + 1] float64 times t_start, ..., 0 (uniform in t, as the authors' sampler)."""
        return torch.linspace(self.t_start, 0.0, self.steps + 1, dtype=torch.float64)

    @staticmethod
    def target_classes(model, classes: Sequence[int] | None) -> tuple[int, ...]:
        """The classes to reconstruct under (default: all of ``model.class_names``), checked against the model."""
        classes = tuple(range(model.num_classes)) if classes is None else tuple(int(c) for c in classes)
        bad = [c for c in classes if not 0 <= c < model.num_classes]
        if bad:
            raise ConfigError(f"classes {bad} are out of range for a model with classes {model.class_names}")
        return classes


@dataclass(frozen=True)
class CounterfactualSampler(SamplerSettings):
    """The ancestral CFG sampler of the module docstring, as a frozen config that is called on a model.

    Args (and those of ``SamplerSettings``):
        guidance: w, the classifier-free guidance scale (0 = the plain conditional sampler, no null-class forward).
        max_batch: most rows per denoiser forward (a step's B x K (x 2) rows are split into chunks of this size).
    """

    guidance: float = 7.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.guidance < 0:
            raise ConfigError(f"explain.guidance: expected w >= 0 (paper: 7.5; 0 = no guidance), got {self.guidance}")

    @torch.inference_mode()
    def __call__(
        self,
        model,
        pixels: torch.Tensor,
        ids: Sequence[str],
        classes: Sequence[int] | None = None,
    ) -> CounterfactualResult:
        """Reconstruct images under every class in ``classes`` (default: all of the model's classes).

        Args:
            model: a ``meddiff.diffusion.model.DiffusionModel`` (denoiser, schedule, model space, class names).
            pixels: [B, channels, image_size, image_size] in [-1, 1].
            ids: B image ids (they seed the noise).
        """
        classes = self.target_classes(model, classes)
        device = next(model.denoiser.parameters()).device
        recon = sample_counterfactuals(
            denoiser=model.denoiser,
            schedule=model.schedule,
            x=model.to_model_space(pixels.to(device, torch.float32)),
            img_seeds=[image_seed(self.seed, str(i)) for i in ids],
            classes=classes,
            null_class=model.num_classes,
            timesteps=self.timesteps(),
            guidance=self.guidance,
            time_kind=model.diffusion.time_input,
            to_pixels=model.to_pixels,
            to_model_space=model.to_model_space,
            max_batch=self.max_batch,
        )
        b, k = recon.shape[:2]
        rec_px = model.to_pixels(recon.flatten(0, 1)).reshape((b, k) + tuple(pixels.shape[1:])).float().cpu()
        inputs = pixels.float().cpu()
        errors = (rec_px - inputs[:, None]).pow(2).flatten(2).mean(2)
        return CounterfactualResult(inputs=inputs, classes=classes, reconstructions=rec_px, errors=errors)


def step_noise(img_seeds: Sequence[int], step: int, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """[B, *shape] standard normal noise of one sampler step (step 0: the start noise eps), from (image seed, step).

    Drawn on the CPU so an image's noise is the same on every device and in every batch.
    """
    gen = torch.Generator(device="cpu")
    out = torch.empty((len(img_seeds),) + tuple(shape))
    for i, s in enumerate(img_seeds):
        gen.manual_seed(draw_seed(int(s), step))
        out[i] = torch.randn(shape, generator=gen)
    return out.to(device)


def guided_x_hat(x_cond: torch.Tensor, x_null: torch.Tensor | None, w: float) -> torch.Tensor:
    """x_tilde = (1 + w) x_hat(z, c) - w x_hat(z, null); w = 0 returns x_hat(z, c) itself."""
    if w == 0 or x_null is None:
        return x_cond
    return (1.0 + w) * x_cond - w * x_null


def ancestral_step(
    z: torch.Tensor, x_hat: torch.Tensor, logsnr_t: torch.Tensor, logsnr_s: torch.Tensor, noise: torch.Tensor | None
) -> torch.Tensor:
    """One step of the authors' ancestral sampler from t to s < t (scalars lambda_t < lambda_s).

        c = -expm1(lambda_t - lambda_s),  mean = alpha_s (z (1 - c) / alpha_t + c x_hat),  var = sigma_s^2 c.
    ``noise`` None returns the mean (the last step).
    """
    alpha_t, _ = alpha_sigma(logsnr_t)
    alpha_s, sigma_s = alpha_sigma(logsnr_s)
    c = -torch.expm1(logsnr_t - logsnr_s)
    mean = alpha_s * (z * (1.0 - c) / alpha_t + c * x_hat)
    if noise is None:
        return mean
    return mean + (sigma_s.pow(2) * c).sqrt() * noise


def sample_counterfactuals(
    denoiser: nn.Module,
    schedule: ShiftedCosineSchedule,
    x: torch.Tensor,
    img_seeds: Sequence[int],
    classes: Sequence[int],
    null_class: int,
    timesteps: torch.Tensor,
    guidance: float,
    time_kind: str = "logsnr",
    to_pixels: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
    to_model_space: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
    max_batch: int = 256,
) -> torch.Tensor:
    """The sampler as a pure tensor function (no model wrapper): returns z_0 [B, K, *model_shape] in model space.

    Args:
        x: [B, *model_shape] clean inputs in model space, on the denoiser's device.
        img_seeds: B image seeds (``noise.image_seed``).
        classes: the K target classes; null_class: the label of the unconditional (null) class.
        timesteps: [S + 1] decreasing times from t_start to 0 (``CounterfactualSampler.timesteps``).
        guidance: w; when 0 the null class is not evaluated at all.
        to_pixels / to_model_space: the model's transforms, used to clip x_tilde to [-1, 1] in pixel space.
    """
    b, k = x.shape[0], len(classes)
    shape = tuple(x.shape[1:])
    device = x.device
    t_start = float(timesteps[0])
    if t_start == 0.0 or len(timesteps) < 2:
        return x[:, None].expand((b, k) + shape).clone()
    logsnrs = schedule.logsnr(timesteps.to(torch.float64))  # [S + 1], lambda_{t_start} ... lambda_0
    # 1. z_{t_start} = alpha x + sigma eps: one eps per image, shared by all its classes
    alpha0, sigma0 = alpha_sigma(logsnrs[0].float())
    eps = step_noise(img_seeds, 0, shape, device)
    z = (alpha0 * x + sigma0 * eps)[:, None].expand((b, k) + shape).reshape((b * k,) + shape).clone()
    labels = torch.tensor(classes, device=device).repeat(b)  # row r = image r // K, class classes[r % K]
    use_null = guidance != 0
    if use_null:
        labels = torch.cat([labels, torch.full_like(labels, null_class)])
    steps = len(timesteps) - 1
    for i in range(steps):
        lam_t, lam_s = logsnrs[i], logsnrs[i + 1]
        alpha_t, sigma_t = alpha_sigma(lam_t.float())
        # 2a. v_hat for every (image, class) and, with guidance, the null class on the same z: one batch per step
        z_in = torch.cat([z, z]) if use_null else z
        time = time_input(lam_t.float().expand(len(z_in)).to(device), timesteps[i].float().expand(len(z_in)).to(device),
                          time_kind)
        v_hat = _forward_chunked(denoiser, z_in, time, labels, max_batch)
        # 2b. x_hat = alpha_t z - sigma_t v_hat; x_tilde = (1 + w) x_hat(c) - w x_hat(null), clipped in pixels
        x_hat = x_from_v(z_in, v_hat, alpha_t.expand(len(z_in)).to(device), sigma_t.expand(len(z_in)).to(device))
        x_tilde = guided_x_hat(x_hat[: b * k], x_hat[b * k :] if use_null else None, guidance)
        x_tilde = to_model_space(to_pixels(x_tilde).clamp(-1.0, 1.0))
        # 2c. ancestral step t -> s with per-image noise shared by the image's classes; no noise into s = 0
        last = i == steps - 1
        noise = None if last else step_noise(img_seeds, i + 1, shape, device).repeat_interleave(k, dim=0)
        z = ancestral_step(z, x_tilde, lam_t.float().to(device), lam_s.float().to(device), noise)
    return z.reshape((b, k) + shape)


def _forward_chunked(denoiser: nn.Module, z: torch.Tensor, time: torch.Tensor, labels: torch.Tensor,
                     max_batch: int) -> torch.Tensor:
    if len(z) <= max_batch:
        return denoiser(z, time, labels).float()
    return torch.cat([denoiser(z[i : i + max_batch], time[i : i + max_batch], labels[i : i + max_batch]).float()
                      for i in range(0, len(z), max_batch)])
