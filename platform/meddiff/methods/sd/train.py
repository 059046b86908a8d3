"""Fine-tuning the Stable Diffusion UNet on class prompts (``method: sd``), on the shared method loop
(``meddiff.train.loop``: Adam, warm-up, clipping, optional EMA, seeded batches, progress, metrics.jsonl, bundles,
resume, loss.png, Ray Train through the context).

One step (the Hugging Face text-to-image training recipe the paper used, Appendix D):
  1. the frozen VAE encodes the batch (grayscale repeated to RGB) into latents x = (posterior draw - shift) * scale
     (``method_options.latent``: ``sample`` as the HF script, or the posterior ``mean``);
  2. eps ~ N(0, I) and an integer timestep k uniform on [0, T) per image; z = DDPM add_noise(x, eps, k);
  3. the UNet sees z, k and the class's prompt embedding (encoded once by the frozen text encoder);
  4. loss = MSE(UNet output, eps), or against the velocity for a v-prediction model.
Latents, noise and timesteps come from the (seed, step, rank) generator, so a resumed run continues exactly.
The ``model`` and ``diffusion`` config sections do not apply: the architecture and the noise table come from the
pretrained folder.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from meddiff.config import ExperimentConfig
from meddiff.diffusion.ema import EMA
from meddiff.methods.sd.model import KIND, build_sd_model, sd_options
from meddiff.train.loop import run_loop, setup_run
from meddiff.train.batches import step_generator
from meddiff.train.context import LocalContext


def train_sd(cfg: ExperimentConfig, context: LocalContext | None = None) -> Path | None:
    """Fine-tune (or resume) the run ``cfg.output_dir/cfg.name``; returns the newest bundle's path on rank 0."""
    opts = sd_options(cfg.method_options)
    setup = setup_run(cfg, context, KIND)
    tc, device, rank = cfg.train, setup.device, setup.ctx.rank
    model, scheduler = build_sd_model(opts, setup.manifest.class_names, cfg.data.image_size, cfg.data.channels, device)
    unet = model.unet.to(device).train().requires_grad_(True)
    if opts.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    num_timesteps = int(scheduler.config.num_train_timesteps)
    if setup.ctx.is_main:
        setup.ctx.log(f"[train] sd: UNet {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M parameters from "
                      f"{model.pretrained.path}; latents {list(model.latent_shape)} (scale {model.latent_scale:.4g}); "
                      f"{num_timesteps} DDPM timesteps, {model.prediction_type}-prediction; prompts "
                      f"{dict(zip(model.class_names, model.prompts))}")

    def step_fn(net: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        gen = step_generator(tc.seed, step, rank, device)
        latents = model.encode(pixels, opts.latent, gen)
        noise = torch.randn(latents.shape, generator=gen, device=device)
        timesteps = torch.randint(0, num_timesteps, (latents.shape[0],), generator=gen, device=device)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        if model.prediction_type == "epsilon":
            target = noise
        else:
            target = scheduler.get_velocity(latents, noise, timesteps)
        pred = net(noisy, timesteps, encoder_hidden_states=model.prompt_embeds[labels]).sample
        return {"loss": F.mse_loss(pred.float(), target.float())}

    ema = EMA(unet, beta=tc.ema_beta, warmup=tc.ema_warmup, every=tc.ema_every) if opts.ema else None
    return run_loop(setup, unet, step_fn, model.metadata_fields(), ema=ema)
