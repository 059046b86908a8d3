"""The diffusion training loop (single process; ``meddiff.train.ray_trainer`` runs the same loop in Ray Train workers).

Steps (paper Appendix B): Adam, linear LR warm-up, min-SNR v-loss with CFG label dropout, gradient clipping, EMA.
Progress lines carry loss, LR, steps/s and ETA; every ``log_every`` steps a JSON line goes to ``metrics.jsonl``; bundles
are written every ``checkpoint_every`` steps and at the end; at the end a loss curve is drawn (``loss.png``).
Re-running with the same ``output_dir/name`` resumes from the newest bundle (same data and model config required).
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from meddiff.config import ExperimentConfig, save_config, to_dict
from meddiff.data import ImageDecoder, build_manifest
from meddiff.device import autocast_dtype, set_threads
from meddiff.diffusion.ema import EMA
from meddiff.diffusion.loss import diffusion_loss
from meddiff.diffusion.model import build_diffusion_model
from meddiff.errors import CheckpointError
from meddiff.progress import Progress
from meddiff.train.batches import step_generator, training_batches
from meddiff.train.checkpoint import check_resumable, load_train_state, save_bundle
from meddiff.train.context import LocalContext
from meddiff.train.metrics_log import append_metrics, plot_metrics
from safetensors.torch import load_file


def lr_at(step: int, base_lr: float, warmup: int) -> float:
    """Linear warm-up to base_lr over ``warmup`` steps, then constant (as in the paper)."""
    return base_lr * min(1.0, step / warmup) if warmup > 0 else base_lr


def train_diffusion(cfg: ExperimentConfig, context: LocalContext | None = None) -> Path:
    """Train (or resume) the run ``cfg.output_dir/cfg.name``; returns the final bundle's path."""
    ctx = context or LocalContext()
    tc = cfg.train
    set_threads(tc.num_threads)
    device = ctx.device(tc.device)
    amp_dtype = autocast_dtype(device, tc.precision)
    run_dir = Path(cfg.run_dir)
    ckpt_dir = ctx.checkpoint_dir(run_dir)

    manifest = build_manifest(cfg.data)
    train_m = manifest.select("train")
    if len(train_m) == 0:
        raise ValueError(f"data source {cfg.data.source!r} has no training images")
    fingerprint = manifest.fingerprint()
    decoder = ImageDecoder(cfg.data.image_size, cfg.data.channels)
    if ctx.is_main:
        counts = train_m.class_counts()
        ctx.log(f"[train] {cfg.name}: {len(train_m)} training images {counts} from {cfg.data.source}; device {device}")

    model = build_diffusion_model(cfg.model, cfg.diffusion, manifest.class_names, cfg.data.image_size, cfg.data.channels)
    denoiser = model.denoiser.to(device)
    if device.type == "cuda":
        denoiser = denoiser.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(denoiser.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    ema = EMA(denoiser, beta=tc.ema_beta, warmup=tc.ema_warmup, every=tc.ema_every)

    start = 0
    resume = ctx.resume_bundle(run_dir)
    if resume is not None:
        check_resumable(resume, cfg, fingerprint, "diffusion", lambda c: (c.model, c.diffusion),
                        "model/diffusion config")
        state = load_train_state(resume, denoiser, optimizer)
        ema.load_state(state["ema"])
        if ema.num_updates:
            ema.model.load_state_dict(load_file(str(resume / "model.safetensors")))
        start = int(state["step"])
        if ctx.is_main:
            ctx.log(f"[train] resuming {cfg.name} from {resume.name} (step {start}/{tc.steps})")
    net = ctx.wrap_model(denoiser)
    batches = training_batches(train_m, decoder, tc, ctx, start, device)

    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.json")
        n_params = sum(p.numel() for p in denoiser.parameters())
        ctx.log(f"[train] {cfg.model.name}: {n_params / 1e6:.2f} M parameters, input {list(model.model_shape)}, "
                f"{tc.steps} steps of batch {tc.batch_size} x {ctx.world_size} worker(s)")
    metadata = dict(model.metadata_fields(), data_fingerprint=fingerprint, config=to_dict(cfg), train_images=len(train_m))
    metrics_file = run_dir / "metrics.jsonl"
    progress = Progress(tc.steps, "[train] step", unit="step", every_s=0.0, start=start,
                        write=ctx.log if ctx.is_main else (lambda _line: None))
    window: list[float] = []
    last_bundle: Path | None = resume
    amp = torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    net.train()
    t_start = time.monotonic()
    for step, (pixels, labels) in zip(range(start + 1, tc.steps + 1), batches):
        # noise and label dropout: the (seed, step, rank) stream on the device; batch indices used the CPU stream
        gen = step_generator(tc.seed, step, ctx.rank, device)
        x = model.to_model_space(pixels.to(device, non_blocking=True))
        lr = lr_at(step, tc.lr, tc.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with amp:
            loss = diffusion_loss(net, x, labels.to(device), model.schedule, model.num_classes, cfg.diffusion, gen)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"[train] loss became {loss.item()} at step {step}; lower train.lr or check the data")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # clip_grad_norm_ with inf measures the norm without clipping (grad_clip 0 = off)
        grad_norm = torch.nn.utils.clip_grad_norm_(denoiser.parameters(), tc.grad_clip or float("inf"))
        optimizer.step()
        ema.update(denoiser, step)
        last_loss = loss.item()
        window.append(last_loss)
        if step % tc.log_every == 0 or step == tc.steps:
            mean_loss = sum(window) / len(window)
            window.clear()
            progress.update(step - progress.done, extra=f"loss {mean_loss:.4f} | lr {lr:.2e}", force=True)
            if ctx.is_main:
                append_metrics(metrics_file, {"step": step, "loss": mean_loss, "lr": lr, "grad_norm": float(grad_norm),
                                              "elapsed_s": round(time.monotonic() - t_start, 2),
                                              "resumed_from_step": start})
        if step % tc.checkpoint_every == 0 or step == tc.steps:
            bundle = None
            if ctx.is_main:
                bundle = save_bundle(
                    ckpt_dir, step, ema.inference_model(denoiser), metadata,
                    train_state={"model": denoiser, "optimizer": optimizer,
                                 "state": {"step": step, "ema": ema.state()}},
                    keep=tc.keep_checkpoints,
                )
                last_bundle = bundle
                ctx.log(f"[train] saved {bundle}")
            ctx.report({"step": step, "loss": last_loss}, bundle)
    if ctx.is_main and metrics_file.is_file():
        plot_metrics(metrics_file, run_dir / "loss.png", "weighted v-loss")
    if last_bundle is None and ctx.is_main:  # other ranks never write bundles
        raise CheckpointError(f"{cfg.run_dir}: training finished without writing a checkpoint")
    return last_bundle
