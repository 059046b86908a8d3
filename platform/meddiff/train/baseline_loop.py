"""The discriminative baseline training loop (the paper's Table 1 classifiers), structured like ``train.loop``.

Steps (paper Appendix B.1/B.2): the paper's augmentations (when ``train.augment``), cross-entropy, Adam with
``train.lr`` / ``train.weight_decay`` (paper: 1e-4 for CNNs, 1e-5 for ViT/Swin; weight decay 1e-5 on ISIC, 1e-3 on
CheXpert for CNNs), linear LR warm-up over ``train.warmup_steps`` (0 = none), gradient clipping at ``train.grad_clip``
(0 = none). The EMA settings do not apply: the bundle holds the trained weights themselves.
Progress lines carry loss, batch accuracy, LR, steps/s and ETA; every ``log_every`` steps a JSON line goes to
``metrics.jsonl``; every ``checkpoint_every`` steps and at the end the val split is classified (one forward pass),
its accuracy logged, written to metrics.jsonl and stored in the bundle's metadata; at the end ``loss.png`` shows the
training loss and the val accuracy. Re-running with the same ``output_dir/name`` resumes from the newest bundle
(same data, model and augmentation config required).

The loop only talks to the context (``LocalContext`` or Ray Train's) for rank, device, model wrapping, checkpoint
folder, resume bundle and reporting.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from meddiff.config import ExperimentConfig, save_config, to_dict
from meddiff.data import ImageDecoder, Manifest, ManifestDataset, build_manifest
from meddiff.device import autocast_dtype, set_threads
from meddiff.errors import CheckpointError, ConfigError
from meddiff.models.baseline_model import KIND, build_baseline_model
from meddiff.progress import Progress
from meddiff.train.augment import PAPER_AUGMENTATION
from meddiff.train.batches import bytes_needed, decode_split, step_generator, training_batches
from meddiff.train.checkpoint import check_resumable, load_train_state, save_bundle
from meddiff.train.context import LocalContext
from meddiff.train.loop import lr_at
from meddiff.train.metrics_log import append_metrics, plot_metrics

AUGMENT_STREAM = 2  # step_generator streams: 0 = noise (diffusion), 1 = batch indices, 2 = augmentation parameters


def train_baseline(cfg: ExperimentConfig, context: LocalContext | None = None) -> Path:
    """Train (or resume) the baseline run ``cfg.output_dir/cfg.name``; returns the final bundle's path."""
    if cfg.method != KIND:
        raise ConfigError(f"method: train_baseline needs method: {KIND}, got {cfg.method!r} (use train_diffusion)")
    ctx = context or LocalContext()
    tc = cfg.train
    set_threads(tc.num_threads)
    device = ctx.device(tc.device)
    amp_dtype = autocast_dtype(device, tc.precision)
    run_dir = Path(cfg.run_dir)
    ckpt_dir = ctx.checkpoint_dir(run_dir)

    manifest = build_manifest(cfg.data)
    train_m, val_m = manifest.select("train"), manifest.select("val")
    if len(train_m) == 0:
        raise ValueError(f"data source {cfg.data.source!r} has no training images")
    fingerprint = manifest.fingerprint()
    decoder = ImageDecoder(cfg.data.image_size, cfg.data.channels)
    if ctx.is_main:
        ctx.log(f"[train] {cfg.name}: {len(train_m)} training images {train_m.class_counts()}, {len(val_m)} val images "
                f"from {cfg.data.source}; device {device}")

    # the same initial weights on every rank and in every run of this seed, without touching the global RNG stream
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tc.seed)
        model = build_baseline_model(cfg.model, manifest.class_names, cfg.data.image_size, cfg.data.channels)
    network = model.network.to(device)
    if device.type == "cuda":
        network = network.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(network.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)

    start = 0
    resume = ctx.resume_bundle(run_dir)
    if resume is not None:
        check_resumable(resume, cfg, fingerprint, KIND,
                        lambda c: (c.model, c.data.image_size, c.data.channels, c.train.augment),
                        "model, image size/channels or train.augment")
        start = int(load_train_state(resume, network, optimizer)["step"])
        if ctx.is_main:
            ctx.log(f"[train] resuming {cfg.name} from {resume.name} (step {start}/{tc.steps})")
    net = ctx.wrap_model(network)
    batches = training_batches(train_m, decoder, tc, ctx, start, device)
    val_batches = _val_batches(val_m, decoder, tc) if ctx.is_main and len(val_m) else None

    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.json")
        n_params = sum(p.numel() for p in network.parameters())
        ctx.log(f"[train] {cfg.model.name}: {n_params / 1e6:.2f} M parameters, input "
                f"[{cfg.data.channels}, {cfg.data.image_size}, {cfg.data.image_size}], {tc.steps} steps of batch "
                f"{tc.batch_size} x {ctx.world_size} worker(s), augmentation {'on' if tc.augment else 'off'}")
    metadata = dict(model.metadata_fields(), data_fingerprint=fingerprint, config=to_dict(cfg),
                    train_images=len(train_m), val_images=len(val_m))
    metrics_file = run_dir / "metrics.jsonl"
    progress = Progress(tc.steps, "[train] step", unit="step", every_s=0.0, start=start,
                        write=ctx.log if ctx.is_main else (lambda _line: None))
    losses: list[float] = []
    hits, seen = 0, 0
    last_bundle: Path | None = resume
    amp = torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    max_norm = tc.grad_clip if tc.grad_clip > 0 else math.inf
    net.train()
    t_start = time.monotonic()
    for step, (pixels, labels) in zip(range(start + 1, tc.steps + 1), batches):
        x, y = pixels.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if tc.augment:
            # parameters from the (seed, step, rank) CPU stream: a resumed run augments as an uninterrupted one
            x = PAPER_AUGMENTATION(x, step_generator(tc.seed, step, ctx.rank, "cpu", stream=AUGMENT_STREAM))
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        lr = lr_at(step, tc.lr, tc.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with amp:
            logits = net(x)
        loss = F.cross_entropy(logits.float(), y)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"[train] loss became {loss.item()} at step {step}; lower train.lr or check the data")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(network.parameters(), max_norm)
        optimizer.step()
        last_loss = loss.item()
        losses.append(last_loss)
        hits += int((logits.argmax(dim=1) == y).sum())
        seen += y.numel()
        if step % tc.log_every == 0 or step == tc.steps:
            mean_loss, acc = sum(losses) / len(losses), hits / seen
            losses.clear()
            hits, seen = 0, 0
            progress.update(step - progress.done, extra=f"loss {mean_loss:.4f} | acc {acc:.3f} | lr {lr:.2e}",
                            force=True)
            if ctx.is_main:
                append_metrics(metrics_file, {"step": step, "loss": mean_loss, "accuracy": acc, "lr": lr,
                                       "grad_norm": float(grad_norm), "elapsed_s": round(time.monotonic() - t_start, 2),
                                       "resumed_from_step": start})
        if step % tc.checkpoint_every == 0 or step == tc.steps:
            bundle = None
            report = {"step": step, "loss": last_loss}
            if ctx.is_main:
                if val_batches is not None:
                    # the unwrapped network: a DDP forward on rank 0 alone would wait for the other ranks
                    val = evaluate(network, val_batches(), device, amp)
                    network.train()
                    metadata.update(val_accuracy=val["accuracy"], val_loss=val["loss"])
                    report.update(val_accuracy=val["accuracy"], val_loss=val["loss"])
                    append_metrics(metrics_file, {"step": step, "val_loss": val["loss"], "val_accuracy": val["accuracy"]})
                    ctx.log(f"[train] step {step}: val accuracy {val['accuracy']:.3f} | val loss {val['loss']:.4f} "
                            f"({val['images']} images)")
                bundle = save_bundle(
                    ckpt_dir, step, network, metadata,
                    train_state={"model": network, "optimizer": optimizer, "state": {"step": step}},
                    keep=tc.keep_checkpoints,
                )
                last_bundle = bundle
                ctx.log(f"[train] saved {bundle}")
            ctx.report(report, bundle)
    if ctx.is_main and metrics_file.is_file():
        plot_metrics(metrics_file, run_dir / "loss.png", "cross-entropy")
    if last_bundle is None and ctx.is_main:  # other ranks never write bundles
        raise CheckpointError(f"{cfg.run_dir}: training finished without writing a checkpoint")
    return last_bundle


@torch.no_grad()
def evaluate(network: nn.Module, batches, device: torch.device, amp=None) -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``network`` (put in eval mode) over (images [B, C, H, W], labels [B]) batches."""
    network.eval()
    loss_sum, hits, n = 0.0, 0, 0
    for images, labels in batches:
        images, labels = images.to(device), labels.to(device)
        with amp or nullcontext():
            logits = network(images).float()
        loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        hits += int((logits.argmax(dim=1) == labels).sum())
        n += labels.numel()
    return {"loss": loss_sum / max(n, 1), "accuracy": hits / n if n else float("nan"), "images": n}


def _val_batches(val_m: Manifest, decoder: ImageDecoder, tc):
    """A function returning a fresh iterator over the val split's (images, labels) batches: decoded once into (CPU)
    memory when it fits in ``train.preload_max_gb``, else read from the files at every evaluation."""
    if bytes_needed(len(val_m), decoder) <= tc.preload_max_gb * 2**30:
        images, labels = decode_split(val_m, decoder, label="[train] decoding val")

        def from_memory() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for i in range(0, len(labels), tc.batch_size):
                yield images[i:i + tc.batch_size], labels[i:i + tc.batch_size]

        return from_memory

    def from_files() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader = DataLoader(ManifestDataset(val_m, decoder), batch_size=tc.batch_size, num_workers=tc.num_workers)
        for images, labels, _index in loader:
            yield images, labels

    return from_files
