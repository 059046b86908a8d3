"""The training loop every method shares (``meddiff.methods.<name>.train``: the paper's diffusion classifier, the
baselines, SD, Mediffusion, DiDiCM), with the method-specific part (what one step computes) passed in as a function.

    setup = setup_run(cfg, context, kind)          # threads, device, manifest, decoder, data fingerprint, run folders
    bundle = run_loop(setup, network, step_fn, metadata, validate=..., ema=...)

``run_loop`` does: Adam with ``train.lr`` / ``train.weight_decay``, linear warm-up
(``lr_at``), gradient clipping at ``train.grad_clip`` (0 = none), optional EMA, seeded batches
(``train.batches.training_batches``, the same (seed, step, rank) streams, so a resumed run continues exactly as an
uninterrupted one), progress lines, a JSON line per ``log_every`` steps in ``metrics.jsonl``, a bundle every
``checkpoint_every`` steps and at the end (validated on the val split first when ``validate`` is given), resume from the
newest bundle of the run, and ``loss.png`` at the end. It only talks to the context (``LocalContext`` or Ray Train's)
for rank, device, model wrapping (DDP), checkpoint folder, resume bundle and reporting.

``step_fn(net, pixels, labels, step) -> dict`` returns ``{"loss": scalar tensor, <name>: float, ...}``; the extra
entries are averaged over the logging window and written beside the loss.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader

from meddiff import tracking
from meddiff.config import ExperimentConfig, save_config, to_dict
from meddiff.data import ImageDecoder, Manifest, ManifestDataset, build_manifest
from meddiff.data.leakage import summary_line as leakage_summary
from meddiff.device import autocast_dtype, set_threads
from meddiff.diffusion.ema import EMA
from meddiff.errors import CheckpointError, ConfigError, DataError
from meddiff.progress import Progress
from meddiff.provenance import code_version
from meddiff.train.batches import bytes_needed, decode_split, training_batches
from meddiff.bundle import check_resumable, load_train_state, save_bundle
from meddiff.train.context import LocalContext
from meddiff.train.metrics_log import append_metrics, plot_metrics

StepFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, int], dict[str, Any]]


@contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Build networks inside this block: the same initial weights on every rank and in every run of ``seed`` (a run's
    results then depend only on its config), without touching the global RNG stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def lr_at(step: int, base_lr: float, warmup: int) -> float:
    """Linear warm-up to base_lr over ``warmup`` steps, then constant (as in the paper)."""
    return base_lr * min(1.0, step / warmup) if warmup > 0 else base_lr


@dataclass
class RunSetup:
    """What every method loop prepares before its first step."""

    cfg: ExperimentConfig
    kind: str
    ctx: LocalContext
    device: torch.device
    amp_dtype: torch.dtype | None
    run_dir: Path
    ckpt_dir: Path
    manifest: Manifest
    train_m: Manifest
    val_m: Manifest
    decoder: ImageDecoder
    fingerprint: str

    def amp(self):
        """A fresh autocast context (bf16 on CUDA by default), or a no-op."""
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)


def setup_run(cfg: ExperimentConfig, context: LocalContext | None, kind: str) -> RunSetup:
    """Threads, device, manifest and folders of the run ``cfg.output_dir/cfg.name`` of method ``kind``."""
    if cfg.method != kind:
        raise ConfigError(f"method: the {kind} training loop needs method: {kind}, got {cfg.method!r}")
    ctx = context or LocalContext()
    set_threads(cfg.train.num_threads)
    device = ctx.device(cfg.train.device)
    run_dir = Path(cfg.run_dir)
    manifest = build_manifest(cfg.data)
    train_m, val_m = manifest.select("train"), manifest.select("val")
    if len(train_m) == 0:
        raise DataError(f"data source {cfg.data.source!r} has no training images (split 'train' is empty)")
    setup = RunSetup(cfg=cfg, kind=kind, ctx=ctx, device=device,
                     amp_dtype=autocast_dtype(device, cfg.train.precision), run_dir=run_dir,
                     ckpt_dir=ctx.checkpoint_dir(run_dir), manifest=manifest, train_m=train_m, val_m=val_m,
                     decoder=ImageDecoder.from_config(cfg.data), fingerprint=manifest.fingerprint())
    if ctx.is_main:
        ctx.log(f"[train] {cfg.name} ({kind}): {len(train_m)} training images {train_m.class_counts()}, "
                f"{len(val_m)} val images from {cfg.data.source}; device {device}")
        if manifest.checks:
            ctx.log(f"[train] data checks ({manifest.grouping}): {leakage_summary(manifest.checks)}")
    return setup


def resume_fields(cfg: ExperimentConfig) -> tuple:
    """The settings a method's weights depend on: a run resumes only when they are unchanged."""
    return (cfg.model, cfg.diffusion, cfg.data.image_size, cfg.data.channels, dict(cfg.method_options),
            cfg.train.augment)


def val_batches(setup: RunSetup) -> Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    """A function returning a fresh iterator over the val split's (images, labels) batches: decoded once into (CPU)
    memory when it fits in ``train.preload_max_gb``, else read from the files at every evaluation."""
    val_m, decoder, tc = setup.val_m, setup.decoder, setup.cfg.train
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


@torch.no_grad()
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


def evaluate_probs(prob_fn: Callable[[torch.Tensor], torch.Tensor], batches, device: torch.device) -> dict[str, float]:
    """Accuracy and mean negative log-likelihood of ``prob_fn`` (images [B, C, H, W] -> class probabilities [B, K])
    over (images, labels) batches."""
    nll, hits, n = 0.0, 0, 0
    for images, labels in batches:
        prob = prob_fn(images.to(device)).float().cpu()
        nll += float(-torch.log(prob.gather(1, labels[:, None]).clamp(min=1e-12)).sum())
        hits += int((prob.argmax(dim=1) == labels).sum())
        n += labels.numel()
    return {"val_accuracy": hits / n if n else float("nan"), "val_nll": nll / max(n, 1)}


def run_loop(
    setup: RunSetup,
    network: nn.Module,
    step_fn: StepFn,
    metadata: dict[str, Any],
    validate: Callable[[nn.Module], dict[str, float]] | None = None,
    ema: EMA | None = None,
    loss_label: str = "training loss",
) -> Path | None:
    """Train ``network`` (already on ``setup.device``) for ``train.steps`` steps; returns the newest bundle on rank 0.

    Args:
        step_fn: the method's step: (wrapped net, pixels [B, C, H, W] on the device, labels [B], step) -> dict with
            the scalar ``loss`` tensor to minimise and floats to log.
        metadata: the bundle's metadata (kind, model, class_names, image_size, channels, ...); ``data_fingerprint``,
            ``config`` and image counts are added here.
        validate: rank 0 only, at every checkpoint: (inference model) -> {"val_accuracy": ..., ...}, logged and stored
            in the bundle's metadata.
        ema: the EMA of ``network`` (bundles then hold the EMA weights once it has started, as in ``train.loop``).

    With ``tracking.enabled``, rank 0 also logs to MLflow (``training_run``): the flattened config as params, the
    code version as a tag, the logged means, ``lr`` and ``steps_per_s`` at every logging step (the loss curve is the
    metric history), the val metrics, the final bundle (or its metadata.json), ``loss.png`` and ``metrics.jsonl``.
    """
    with training_run(setup, network) as run:
        return _train(setup, network, step_fn, metadata, validate, ema, loss_label, run)


def training_run(setup: RunSetup, network: nn.Module) -> tracking.TrackedRun | tracking.NoRun:
    """Rank 0's MLflow run of this training (``tracking.NO_RUN`` on other ranks or with tracking off): the run named
    in the run folder's ``mlflow_run_id`` when it exists with the same params (a resumed or restarted run continues
    its curve), else a new one."""
    cfg, ctx = setup.cfg, setup.ctx
    if not ctx.is_main or not cfg.tracking.enabled:
        return tracking.NO_RUN
    id_file = setup.run_dir / tracking.RUN_ID_FILE
    params = {**tracking.flatten(to_dict(cfg)), "parameters": sum(p.numel() for p in network.parameters()),
              "world_size": ctx.world_size}
    run = tracking.open_run(cfg.tracking, cfg.output_dir, cfg.name, run_name=f"train {cfg.name}",
                            tags={"meddiff.job": "train", "meddiff.method": setup.kind,
                                  "meddiff.code_version": code_version(), "meddiff.run_dir": str(setup.run_dir)},
                            params=params, resume_run_id=id_file.read_text().strip() if id_file.is_file() else "",
                            log=ctx.log)
    if run.active:
        setup.run_dir.mkdir(parents=True, exist_ok=True)
        id_file.write_text(run.run_id + "\n")
        ctx.log(f"[train] MLflow run {run.run_id} at {run.uri}")
    return run


def log_bundle(run: tracking.TrackedRun | tracking.NoRun, bundle: Path, whole: bool) -> None:
    """The final bundle as the run's ``bundle/`` artifacts (weights included), or only its metadata.json."""
    import json

    model_id = json.loads((bundle / "metadata.json").read_text()).get("model_id", "")
    run.set_tags({"meddiff.bundle": bundle.name, "meddiff.model_id": model_id})
    if whole:
        run.log_artifacts(bundle, "bundle")
    else:
        run.log_artifact(bundle / "metadata.json", "bundle")


def _train(setup: RunSetup, network: nn.Module, step_fn: StepFn, metadata: dict[str, Any],
           validate: Callable[[nn.Module], dict[str, float]] | None, ema: EMA | None, loss_label: str,
           run: tracking.TrackedRun | tracking.NoRun) -> Path | None:
    cfg, ctx, tc, device = setup.cfg, setup.ctx, setup.cfg.train, setup.device
    optimizer = torch.optim.Adam(network.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    start = 0
    resume = ctx.resume_bundle(setup.run_dir)
    if resume is not None:
        check_resumable(resume, cfg, setup.fingerprint, setup.kind, resume_fields,
                        "model, diffusion, image size/channels, method_options or train.augment")
        state = load_train_state(resume, network, optimizer)
        if ema is not None:
            ema.load_state(state["ema"])
            if ema.num_updates:
                ema.model.load_state_dict(load_file(str(resume / "model.safetensors")))
        start = int(state["step"])
        if ctx.is_main:
            ctx.log(f"[train] resuming {cfg.name} from {resume.name} (step {start}/{tc.steps})")
    net = ctx.wrap_model(network)
    batches = training_batches(setup.train_m, setup.decoder, tc, ctx, start, device)

    n_params = sum(p.numel() for p in network.parameters())
    if ctx.is_main:
        setup.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, setup.run_dir / "config.json")
        ctx.log(f"[train] {cfg.model.name}: {n_params / 1e6:.2f} M parameters, input [{cfg.data.channels}, "
                f"{cfg.data.image_size}, {cfg.data.image_size}], {tc.steps} steps of batch {tc.batch_size} x "
                f"{ctx.world_size} worker(s)")
    metadata = dict(metadata, data_fingerprint=setup.fingerprint, data_checks=setup.manifest.data_checks(),
                    config=to_dict(cfg), parameters=n_params,
                    train_images=len(setup.train_m), val_images=len(setup.val_m))
    metrics_file = setup.run_dir / "metrics.jsonl"
    progress = Progress(tc.steps, "[train] step", unit="step", every_s=0.0, start=start,
                        write=ctx.log if ctx.is_main else (lambda _line: None))
    window: dict[str, list[float]] = {}
    last_bundle: Path | None = resume
    max_norm = tc.grad_clip if tc.grad_clip > 0 else math.inf
    net.train()
    t_start = time.monotonic()
    t_last, step_last = t_start, start
    for step, (pixels, labels) in zip(range(start + 1, tc.steps + 1), batches):
        lr = lr_at(step, tc.lr, tc.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with setup.amp():
            out = step_fn(net, pixels.to(device, non_blocking=True), labels.to(device, non_blocking=True), step)
        loss = out["loss"]
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"[train] loss became {loss.item()} at step {step}; lower train.lr or check the "
                                     f"data")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(network.parameters(), max_norm)
        optimizer.step()
        if ema is not None:
            ema.update(network, step)
        for key, value in out.items():
            window.setdefault(key, []).append(float(value.item() if torch.is_tensor(value) else value))
        if step % tc.log_every == 0 or step == tc.steps:
            means = {k: sum(v) / len(v) for k, v in window.items() if v}
            window.clear()
            extra = " | ".join(f"{k} {v:.4f}" for k, v in means.items())
            progress.update(step - progress.done, extra=f"{extra} | lr {lr:.2e}", force=True)
            if ctx.is_main:
                append_metrics(metrics_file, {"step": step, **means, "lr": lr, "grad_norm": float(grad_norm),
                                           "elapsed_s": round(time.monotonic() - t_start, 2),
                                           "resumed_from_step": start})
                now = time.monotonic()
                run.log_metrics({**means, "lr": lr, "grad_norm": float(grad_norm),
                                 "steps_per_s": (step - step_last) / max(now - t_last, 1e-9)}, step)
                t_last, step_last = now, step
        if step % tc.checkpoint_every == 0 or step == tc.steps:
            bundle = None
            report = {"step": step, "loss": float(loss.item())}
            if ctx.is_main:
                inference = ema.inference_model(network) if ema is not None else network
                if validate is not None and len(setup.val_m):
                    val = validate(inference)
                    network.train()
                    metadata.update(val)
                    report.update(val)
                    append_metrics(metrics_file, {"step": step, **val})
                    run.log_metrics(val, step)
                    ctx.log(f"[train] step {step}: " + " | ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in val.items()))
                state = {"step": step}
                if ema is not None:
                    state["ema"] = ema.state()
                bundle = save_bundle(setup.ckpt_dir, step, inference, metadata,
                                     train_state={"model": network, "optimizer": optimizer, "state": state},
                                     keep=tc.keep_checkpoints)
                last_bundle = bundle
                ctx.log(f"[train] saved {bundle}")
                if step == tc.steps:  # before ctx.report: Ray Train moves the bundle away
                    log_bundle(run, bundle, cfg.tracking.log_bundle)
            ctx.report(report, bundle)
    if ctx.is_main and metrics_file.is_file():
        plot_metrics(metrics_file, setup.run_dir / "loss.png", loss_label)
        for name in ("loss.png", "metrics.jsonl"):
            if (setup.run_dir / name).is_file():
                run.log_artifact(setup.run_dir / name)
    if last_bundle is None and ctx.is_main:  # other ranks never write bundles
        raise CheckpointError(f"{cfg.run_dir}: training finished without writing a checkpoint")
    return last_bundle
