"""Counterfactual explanations of a fine-tuned Stable Diffusion classifier: SDEdit with classifier-free guidance in the
VAE's latent space, run by ``meddiff explain``.

The counterfactuals of Favero et al. 2025 (arXiv 2502.03687, section 4.3; ``meddiff.diffusion.counterfactual`` for
the paper's own pixel/wavelet model), moved into SD's latent space: noise an image part-way and denoise it again
under a class (SDEdit, Meng et al. 2022, "SDEdit: Guided Image Synthesis and Editing with Stochastic Differential
Equations"), steered by classifier-free guidance (Ho & Salimans 2022, "Classifier-Free Diffusion Guidance"). For an
image x (pixels in [-1, 1], grayscale repeated to RGB) and a class c with prompt embedding e_c:
  1. Encode: z_x = (VAE posterior mean(x) - shift) * scaling_factor (``SDModel.encode(pixels, "mean")``, the latents
     ``SDPredictor`` scores).
  2. Noise to k_start = min(floor(t_start T), T - 1) (``DiscreteLogSNR.timestep``, the predictor's map of t to DDPM's
     T timesteps; abar_k = DDPM's alphas_cumprod, alpha_k = sqrt(abar_k), sigma_k = sqrt(1 - abar_k)):
        z = alpha_{k_start} z_x + sigma_{k_start} eps,   eps = ``step_noise`` step 0 of image seed (seed, image id).
  3. Denoise with S = ``steps`` steps through the timesteps k_start = k_1 > k_2 > ... > k_S = 0 (round(linspace(
     k_start, 0, S)), repeats dropped, so at most k_start + 1 steps), then to the clean latent. At step i, from k_i:
        eps_c = UNet(z, k_i, e_c), eps_null = UNet(z, k_i, e_null)   e_null: the empty prompt "" through the frozen
                                                                     text encoder (skipped when w = 0); a
                                                                     v-prediction UNet's v gives eps = sigma z + alpha v
        eps_tilde = (1 + w) eps_c - w eps_null                       classifier-free guidance (the paper's convention,
                                                                     w = ``guidance``; as linear in eps as in x_hat)
        x_tilde = (z - sigma_{k_i} eps_tilde) / alpha_{k_i}          the guided clean-latent estimate
        z <- ancestral_step(z, x_tilde, lambda_{k_i}, lambda_{k_{i+1}}, noise_i)   DDPM's posterior
                                                                     q(z_{k_{i+1}} | z_{k_i}, x_tilde), the authors'
                                                                     ancestral step (lambda = log-SNR); noise_i =
                                                                     ``step_noise`` step i of the image seed
        after k_S = 0: z <- x_tilde                                  (the last step goes to alphas_cumprod = 1, as
                                                                     DDIM's, Song et al. 2021)
  4. Decode: pixels = VAE.decode(z / scaling_factor + shift), clamped to [-1, 1], averaged over RGB for grayscale
     inputs and resized (bilinear) to the input's size if the VAE returns another; error = mean squared difference to
     the input over pixels.

Every class of an image starts from the same noisy latent and receives the same per-step noise, so the differences
between classes come from the prompt alone; noise depends only on (seed, image id), never on the batch. t_start = 0
returns the VAE reconstruction decode(encode(x)) under every class (nothing is noised, no step is taken).

Differences from the paper's sampler: no clipping of x_tilde (SD latents have no fixed range; SD's scheduler config,
as the tiny one of ``meddiff.methods.sd.tiny``, sets clip_sample false); time is DDPM's discrete timesteps. The fine-tuning here (``meddiff.methods.sd.train``) uses no
prompt dropout, so the UNet's notion of the null prompt is whatever the pretrained SD model learned (SD is trained
with dropped captions); for a ``tiny:`` random pipeline the null prompt is just another prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from meddiff.config import ExplainConfig
from meddiff.diffusion.counterfactual import CounterfactualResult, SamplerSettings, ancestral_step, step_noise
from meddiff.diffusion.noise import image_seed
from meddiff.diffusion.schedule import alpha_sigma
from meddiff.errors import ConfigError, DataError
from meddiff.methods.explainer import Counterfactuals
from meddiff.methods.sd.engine import DiscreteLogSNR
from meddiff.methods.sd.model import PREDICTION_TYPES, SDModel, load_sd_model


@dataclass(frozen=True)
class SDCounterfactualSampler(SamplerSettings):
    """The SDEdit + CFG sampler of the module docstring, as a frozen config called on an ``SDModel``.

    t_start is mapped to DDPM timestep floor(t_start T) (0 = VAE reconstruction); guidance: w (0 = the plain
    conditional sampler, no null-prompt forward); max_batch: most rows per UNet / VAE call; the others as
    ``SamplerSettings``.
    """

    steps: int = 50
    max_batch: int = 64
    guidance: float = 7.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.guidance < 0:
            raise ConfigError(f"explain.guidance: expected w >= 0 (0 = no guidance), got {self.guidance}")

    @torch.inference_mode()
    def __call__(self, model: SDModel, pixels: torch.Tensor, ids: Sequence[str],
                 classes: Sequence[int] | None = None) -> CounterfactualResult:
        """Reconstruct images under every class in ``classes`` (default: all of the model's classes).

        Args:
            model: an ``SDModel``; with w > 0 it must carry ``null_embed`` (``load_sd_model(..., null_prompt=True)``).
            pixels: [B, channels, H, W] in [-1, 1] (H = W = image_size from the explain job).
            ids: B image ids (they seed the noise).
        """
        classes = self.target_classes(model, classes)
        if pixels.ndim != 4 or pixels.shape[1] != model.channels:
            raise DataError(f"pixels: expected [B, {model.channels}, H, W] images, got {list(pixels.shape)}")
        if len(ids) != pixels.shape[0]:
            raise DataError(f"ids: {len(ids)} ids for {pixels.shape[0]} images")
        if self.guidance != 0 and model.null_embed is None:
            raise ConfigError("guidance w > 0 needs the null prompt's embedding: load the model with "
                              "load_sd_model(path, device, null_prompt=True)")
        device = model.prompt_embeds.device
        latents = encode_latents(model, pixels.to(device, torch.float32), self.max_batch)
        z0 = sample_sd_counterfactuals(
            unet=model.unet, x=latents, img_seeds=[image_seed(self.seed, str(i)) for i in ids],
            cond=model.prompt_embeds[list(classes)], null=model.null_embed if self.guidance != 0 else None,
            timesteps=sdedit_timesteps(self.t_start, self.steps, model.schedule), schedule=model.schedule,
            prediction_type=model.prediction_type, guidance=self.guidance, max_batch=self.max_batch,
        )
        b, k = z0.shape[:2]
        rec = decode_latents(model, z0.flatten(0, 1), self.max_batch)
        rec = to_input_pixels(rec, tuple(pixels.shape[1:])).reshape((b, k) + tuple(pixels.shape[1:])).float().cpu()
        inputs = pixels.float().cpu()
        errors = (rec - inputs[:, None]).pow(2).flatten(2).mean(2)
        return CounterfactualResult(inputs=inputs, classes=classes, reconstructions=rec, errors=errors)


def sdedit_timesteps(t_start: float, steps: int, schedule: DiscreteLogSNR) -> torch.Tensor:
    """int64 [S'] the decreasing DDPM timesteps k_start, ..., 0 the steps start from (S' <= min(S, k_start + 1));
    empty for t_start = 0 (no noise, no step)."""
    if t_start == 0.0:
        return torch.zeros(0, dtype=torch.long)
    k_start = int(schedule.timestep(torch.tensor(float(t_start), dtype=torch.float64)))
    return torch.unique_consecutive(torch.linspace(k_start, 0, steps, dtype=torch.float64).round().long())


def unet_eps(unet: nn.Module, z: torch.Tensor, timestep: int, context: torch.Tensor, prediction_type: str,
             alpha: torch.Tensor, sigma: torch.Tensor, max_batch: int) -> torch.Tensor:
    """[R, *latent] the UNet's noise prediction for rows z [R, *latent] with contexts [R, L, D] at one timestep, in
    chunks of ``max_batch`` rows; a v-prediction (v = alpha eps - sigma x) is turned into eps = sigma z + alpha v."""
    if prediction_type not in PREDICTION_TYPES:
        raise ConfigError(f"prediction_type {prediction_type!r}: expected one of {PREDICTION_TYPES}")
    out = []
    for i in range(0, len(z), max_batch):
        zc = z[i:i + max_batch]
        k = torch.full((len(zc),), int(timestep), dtype=torch.long, device=z.device)
        out.append(unet(zc, k, encoder_hidden_states=context[i:i + max_batch].to(zc.dtype)).sample.float())
    pred = torch.cat(out)
    return pred if prediction_type == "epsilon" else sigma * z + alpha * pred


def guided_eps(eps_cond: torch.Tensor, eps_null: torch.Tensor | None, w: float) -> torch.Tensor:
    """eps_tilde = (1 + w) eps(z, c) - w eps(z, null); w = 0 (or no null) returns eps(z, c) itself."""
    if w == 0 or eps_null is None:
        return eps_cond
    return (1.0 + w) * eps_cond - w * eps_null


def sample_sd_counterfactuals(
    unet: nn.Module,
    x: torch.Tensor,
    img_seeds: Sequence[int],
    cond: torch.Tensor,
    null: torch.Tensor | None,
    timesteps: torch.Tensor,
    schedule: DiscreteLogSNR,
    prediction_type: str,
    guidance: float,
    max_batch: int = 64,
) -> torch.Tensor:
    """Steps 2-3 of the module docstring as a tensor function: returns clean latents [B, K, *latent_shape].

    Args:
        unet: the SD UNet (``UNet2DConditionModel``); x: [B, *latent_shape] clean latents on the UNet's device.
        img_seeds: B image seeds (``noise.image_seed``); cond: [K, L, D] the prompt embeddings of the K classes.
        null: [L, D] the empty prompt's embedding (needed when guidance > 0; never evaluated when it is 0).
        timesteps: decreasing DDPM timesteps (``sdedit_timesteps``); empty returns x under every class.
        schedule: the model's ``DiscreteLogSNR`` (DDPM alphas_cumprod); guidance: w.
        max_batch: most rows per UNet call (a step has B x K rows, twice that with guidance).
    """
    b, k = x.shape[0], cond.shape[0]
    shape = tuple(x.shape[1:])
    device = x.device
    if len(timesteps) == 0:
        return x[:, None].expand((b, k) + shape).clone()
    use_null = guidance != 0
    if use_null and null is None:
        raise ConfigError("guidance w > 0 needs the null prompt's embedding (null)")
    lam = schedule.table  # [T] float32 log-SNR of every DDPM timestep
    # 2. one noisy latent per image, shared by all its classes
    alpha0, sigma0 = alpha_sigma(lam[int(timesteps[0])].to(device))
    eps = step_noise(img_seeds, 0, shape, device)
    z = (alpha0 * x + sigma0 * eps)[:, None].expand((b, k) + shape).reshape((b * k,) + shape).clone()
    context = cond.to(device)[torch.arange(k, device=device).repeat(b)]  # row r = image r // K, class r % K
    if use_null:
        context = torch.cat([context, null.to(device)[None].expand((b * k,) + tuple(null.shape))])
    # 3. denoise under each prompt, guided towards it and away from the null prompt
    for i, kt in enumerate(timesteps.tolist()):
        lam_t = lam[kt].to(device)
        alpha_t, sigma_t = alpha_sigma(lam_t)
        z_in = torch.cat([z, z]) if use_null else z
        eps_all = unet_eps(unet, z_in, kt, context, prediction_type, alpha_t, sigma_t, max_batch)
        eps_tilde = guided_eps(eps_all[: b * k], eps_all[b * k:] if use_null else None, guidance)
        x_tilde = (z - sigma_t * eps_tilde) / alpha_t
        if i == len(timesteps) - 1:
            z = x_tilde
        else:
            noise = step_noise(img_seeds, i + 1, shape, device).repeat_interleave(k, dim=0)
            z = ancestral_step(z, x_tilde, lam_t, lam[int(timesteps[i + 1])].to(device), noise)
    return z.reshape((b, k) + shape)


def encode_latents(model: SDModel, pixels: torch.Tensor, max_batch: int) -> torch.Tensor:
    """Step 1: [B, channels, H, W] in [-1, 1] -> posterior-mean latents [B, *latent_shape] (``SDModel.encode``)."""
    return torch.cat([model.encode(pixels[i:i + max_batch], "mean") for i in range(0, len(pixels), max_batch)])


def decode_latents(model: SDModel, latents: torch.Tensor, max_batch: int) -> torch.Tensor:
    """Step 4: latents [N, *latent_shape] -> the VAE's RGB pixels [N, 3, H', W'] clamped to [-1, 1] (float32)."""
    vae = model.vae
    out = []
    for i in range(0, len(latents), max_batch):
        z = latents[i:i + max_batch] / model.latent_scale + model.latent_shift
        out.append(vae.decode(z.to(vae.dtype)).sample.float().clamp(-1.0, 1.0))
    return torch.cat(out)


def to_input_pixels(rgb: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """[N, 3, H', W'] decoded pixels -> [N, *shape] (C, H, W): the RGB mean for a grayscale input (the encoder saw
    it repeated to RGB), bilinear resizing when the VAE returned another size."""
    c, h, w = shape
    if c == 1:
        rgb = rgb.mean(dim=1, keepdim=True)
    elif c != rgb.shape[1]:
        raise DataError(f"cannot map the VAE's {rgb.shape[1]} channels to {c} input channels")
    if tuple(rgb.shape[2:]) != (h, w):
        rgb = F.interpolate(rgb, size=(h, w), mode="bilinear", align_corners=False, antialias=True).clamp(-1.0, 1.0)
    return rgb


def load_counterfactuals(path: str | Path, cfg: ExplainConfig, device: torch.device,
                         model: SDModel | None = None) -> Counterfactuals:
    """The SD checkpoint at ``path`` (with the empty prompt encoded for the null condition) bound to the SDEdit + CFG
    sampler of ``cfg`` (``guidance`` = w); at most max(64, 2 x batch_size x classes) rows per UNet call. ``model``:
    an already loaded one to reuse (an endpoint's predictor's); it is loaded again when guidance needs the null
    prompt and ``model`` was loaded without it."""
    if model is None or (cfg.guidance != 0 and getattr(model, "null_embed", None) is None):
        model = load_sd_model(path, device, null_prompt=cfg.guidance != 0)
    model.unet.eval()
    model.vae.eval()
    sampler = SDCounterfactualSampler(t_start=cfg.t_start, steps=cfg.steps, guidance=cfg.guidance, seed=cfg.seed,
                                      max_batch=max(64, 2 * cfg.batch_size * model.num_classes))
    return Counterfactuals(model, sampler)
