"""The diffusion classifier's training loop (single process; ``meddiff.train.ray_trainer`` runs it in Ray Train workers).

Steps (paper Appendix B): Adam, linear LR warm-up, min-SNR v-loss with CFG label dropout, gradient clipping, EMA. The
loop itself is the shared one (``meddiff.train.loop.run_loop``): progress lines with loss, LR, steps/s and ETA;
a JSON line per ``log_every`` steps in ``metrics.jsonl``; bundles every ``checkpoint_every`` steps and at the end
(EMA weights for inference, raw weights + optimiser + EMA state for resuming); ``loss.png`` at the end. Re-running with
the same ``output_dir/name`` resumes from the newest bundle (same data and model config required).
"""

from __future__ import annotations

from pathlib import Path

import torch

from meddiff.config import ExperimentConfig
from meddiff.diffusion.ema import EMA
from meddiff.diffusion.loss import diffusion_loss
from meddiff.diffusion.model import build_diffusion_model
from meddiff.train.loop import run_loop, seeded_init, setup_run
from meddiff.train.batches import step_generator
from meddiff.train.context import LocalContext


def train_diffusion(cfg: ExperimentConfig, context: LocalContext | None = None) -> Path:
    """Train (or resume) the run ``cfg.output_dir/cfg.name``; returns the final bundle's path."""
    setup = setup_run(cfg, context, "diffusion")
    tc, device, rank = cfg.train, setup.device, setup.ctx.rank
    with seeded_init(tc.seed):
        model = build_diffusion_model(cfg.model, cfg.diffusion, setup.manifest.class_names, cfg.data.image_size,
                                      cfg.data.channels)
    denoiser = model.denoiser.to(device)
    if device.type == "cuda":
        denoiser = denoiser.to(memory_format=torch.channels_last)
    ema = EMA(denoiser, beta=tc.ema_beta, warmup=tc.ema_warmup, every=tc.ema_every)

    def step(net: torch.nn.Module, pixels: torch.Tensor, labels: torch.Tensor, step: int) -> dict:
        # noise and label dropout: the (seed, step, rank) stream on the device; batch indices used the CPU stream
        gen = step_generator(tc.seed, step, rank, device)
        x = model.to_model_space(pixels)
        return {"loss": diffusion_loss(net, x, labels, model.schedule, model.num_classes, cfg.diffusion, gen)}

    return run_loop(setup, denoiser, step, model.metadata_fields(), ema=ema, loss_label="weighted v-loss")
