"""The D-Cube training loop (step 2 of the paper: a light classifier on a frozen diffusion model's hyper-features),
structured like ``meddiff.methods.baseline.train`` and run by ``meddiff train`` in this process or in Ray Train workers.

Steps:
  1. Load the frozen diffusion model (``method_options.diffusion_checkpoint``) and the data at its image size.
  2. Extract the pooled features of every candidate layer once per split, into memory (they are small): the training
     split (and its horizontal flips when ``flip`` or the consistency loss is on), the val split.
  3. Select layers by the Kolmogorov-Smirnov Gaussianity test on ``ks_images`` training images (``selection``).
  4. Train the head on the selected features: cross-entropy (+ lambda_1 cycle + lambda_2 consistency [+ contrastive]),
     AdamW (paper: lr 2e-4), linear warm-up, gradient clipping, EMA of the head's weights (paper: 0.999).
Progress lines carry loss, batch accuracy, LR, steps/s and ETA; every ``log_every`` steps a JSON line goes to
``metrics.jsonl``; every ``checkpoint_every`` steps and at the end the val split is classified (EMA head), its accuracy
logged and stored in the bundle's metadata; ``loss.png`` at the end. Re-running with the same ``output_dir/name``
resumes from the newest bundle (same frozen model, data and feature settings required; features are re-extracted).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from meddiff.config import ExperimentConfig, config_from_json, save_config, to_dict
from meddiff.data import ImageDecoder, build_manifest
from meddiff.device import autocast_dtype, set_threads
from meddiff.diffusion.ema import EMA
from meddiff.diffusion.loss import time_input
from meddiff.diffusion.schedule import alpha_sigma
from meddiff.errors import CheckpointError, ConfigError, DataError
from meddiff.methods.dcube.features import FeatureSpec, candidate_layers, eps_prediction, extract_split, mid_layer
from meddiff.methods.dcube.head import DCubeHead
from meddiff.methods.dcube.losses import consistency_loss, contrastive_loss, cycle_loss, paired
from meddiff.methods.dcube.model import KIND, load_frozen_diffusion, metadata_fields
from meddiff.methods.dcube.options import DCubeOptions, frozen_checkpoint_path, parse_options
from meddiff.methods.dcube.selection import describe, ks_subset, layer_gaussianity, select_layers
from meddiff.progress import Progress
from meddiff.train.batches import bytes_needed, sample_batch, step_generator
from meddiff.bundle import load_train_state, save_bundle
from meddiff.train.context import LocalContext
from meddiff.train.loop import evaluate, lr_at, seeded_init
from meddiff.train.metrics_log import append_metrics, plot_metrics

FLIP_STREAM = 2  # step_generator streams: 1 = batch indices, 2 = flip coins (as the baseline's augmentation),
DROPOUT_STREAM = 3  # 3 = the head's dropout


def train_dcube(cfg: ExperimentConfig, context: LocalContext | None = None) -> Path:
    """Train (or resume) the D-Cube run ``cfg.output_dir/cfg.name``; returns the final bundle's path (rank 0)."""
    if cfg.method != KIND:
        raise ConfigError(f"method: train_dcube needs method: {KIND}, got {cfg.method!r}")
    opts = parse_options(cfg)
    ctx = context or LocalContext()
    tc = cfg.train
    set_threads(tc.num_threads)
    device = ctx.device(tc.device)
    run_dir = Path(cfg.run_dir)
    ckpt_dir = ctx.checkpoint_dir(run_dir)
    log = ctx.log if ctx.is_main else (lambda _line: None)

    # 1. the frozen model and the data it was trained for
    frozen_path = frozen_checkpoint_path(opts, cfg.output_dir)
    diffusion = load_frozen_diffusion(frozen_path, device)
    _check_data(cfg, diffusion, frozen_path)
    manifest = build_manifest(cfg.data)
    if tuple(manifest.class_names) != diffusion.class_names:
        raise DataError(f"the data's classes {manifest.class_names} differ from the frozen diffusion model's "
                        f"{diffusion.class_names} ({frozen_path}); use the data set the diffusion model was trained on")
    train_m, val_m = manifest.select("train"), manifest.select("val")
    if len(train_m) == 0:
        raise DataError(f"data source {cfg.data.source!r} has no training images (split 'train' is empty)")
    fingerprint = manifest.fingerprint()
    decoder = ImageDecoder.from_config(cfg.data)
    candidates = _candidates(diffusion, opts)
    log(f"[train] {cfg.name}: D-Cube on the frozen diffusion model {diffusion.model_id} ({frozen_path}); "
        f"{len(train_m)} training images {train_m.class_counts()}, {len(val_m)} val images from {cfg.data.source}; "
        f"device {device}")
    log(f"[train] features at t = {opts.t} ({opts.input} input, {opts.conditioning} class, {opts.pool} pooling) "
        f"from {len(candidates)} candidate layers")

    # 2. features of every candidate layer, once
    t_feat = time.monotonic()
    keep_inputs = opts.cycle_weight > 0
    if keep_inputs:
        need = len(train_m) * math.prod(diffusion.model_shape) * 4
        if need > tc.preload_max_gb * 2**30:
            raise ConfigError(f"method_options.cycle_weight: the cycle loss keeps the training split's denoiser inputs in "
                              f"memory ({need / 2**30:.1f} GiB > train.preload_max_gb = {tc.preload_max_gb}); raise "
                              f"train.preload_max_gb or set cycle_weight: 0")
    spec_all = FeatureSpec(t=opts.t, input=opts.input, conditioning=opts.conditioning, pool=opts.pool,
                           layers=tuple(candidates))
    loader_workers = 0 if bytes_needed(len(train_m), decoder) <= tc.preload_max_gb * 2**30 else tc.num_workers
    amp_dtype = autocast_dtype(device, tc.precision)  # bf16 denoiser passes on CUDA; features are pooled in fp32
    amp = torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    with amp:
        train_f = extract_split(diffusion, train_m, decoder, candidates, spec_all, tc.seed, device, opts.extract_batch,
                                flips=opts.needs_flips, keep_inputs=keep_inputs, num_workers=loader_workers,
                                label="[train] features (train)", log=log)

    # 3. Gaussianity selection on a seeded subset of the training images
    subset = torch.from_numpy(ks_subset(len(train_f), opts.ks_images, tc.seed))
    ks = {n: layer_gaussianity(train_f.features[n][subset].numpy()) for n in candidates}
    selected = select_layers(ks, opts.selection, opts.alpha, opts.top_k, opts.min_layers)
    mid = mid_layer(list(candidates))
    if opts.contrastive_weight > 0 and mid not in selected:
        selected = [n for n in candidates if n in selected or n == mid]
        log(f"[train] the contrastive loss acts on {mid!r}: added to the selected layers")
    dims = {n: int(train_f.features[n].shape[1]) for n in candidates}
    log(f"[train] KS Gaussianity on {len(subset)} training images; keeping {opts.selection} layers "
        f"({'top ' + str(opts.top_k) if opts.top_k else f'p {_rule(opts)} {opts.alpha}'}), * = selected:")
    for line in describe(ks, dims, selected):
        log(line)
    spec = FeatureSpec(t=opts.t, input=opts.input, conditioning=opts.conditioning, pool=opts.pool,
                       layers=tuple(selected))
    with amp:
        val_f = (extract_split(diffusion, val_m, decoder, {n: candidates[n] for n in selected}, spec, tc.seed, device,
                               opts.extract_batch, num_workers=loader_workers, label="[train] features (val)", log=log)
                 if ctx.is_main and len(val_m) else None)
    feature_seconds = time.monotonic() - t_feat
    log(f"[train] features extracted in {feature_seconds:.1f} s")

    x_train = _stack(train_f.features, selected).to(device)
    x_flip = _stack(train_f.flipped, selected).to(device) if train_f.flipped is not None else None
    y_train = train_f.labels.to(device)
    z_train = train_f.inputs.to(device) if train_f.inputs is not None else None
    val_batches = _batches(_stack(val_f.features, selected), val_f.labels, tc.batch_size) if val_f else None

    # 4. the head
    with seeded_init(tc.seed):
        head = DCubeHead(selected, [dims[n] for n in selected], diffusion.num_classes, opts.hidden, opts.dropout)
    head.set_standardisation(_stack(train_f.features, selected))
    head.to(device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    ema = EMA(head, beta=tc.ema_beta, warmup=tc.ema_warmup, every=tc.ema_every)
    metadata = dict(
        metadata_fields(diffusion, frozen_path, spec, head, extra={
            "granularity": opts.granularity, "seed": tc.seed,
            "selection": {"mode": opts.selection, "alpha": opts.alpha, "top_k": opts.top_k,
                          "min_layers": opts.min_layers, "ks_images": len(subset),
                          "candidates": {n: {"dim": dims[n], "ks_statistic": ks[n].statistic,
                                             "ks_pvalue": ks[n].pvalue, "selected": n in selected}
                                         for n in candidates}},
        }),
        data_fingerprint=fingerprint, data_checks=manifest.data_checks(),
        config=to_dict(cfg), train_images=len(train_m), val_images=len(val_m),
        feature_seconds=round(feature_seconds, 1),
        # the classifier: the frozen denoiser it reads features from, plus the head
        parameters=sum(p.numel() for m in (diffusion.denoiser, head) for p in m.parameters()),
    )

    start = 0
    resume = ctx.resume_bundle(run_dir)
    if resume is not None:
        _check_resumable(resume, cfg, metadata)
        state = load_train_state(resume, head, optimizer)
        ema.load_state(state["ema"])
        if ema.num_updates:
            ema.model.load_state_dict(load_file(str(resume / "model.safetensors")))
        start = int(state["step"])
        log(f"[train] resuming {cfg.name} from {resume.name} (step {start}/{tc.steps})")
    net = ctx.wrap_model(head)

    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.json")
        n_params = sum(p.numel() for p in head.parameters())
        losses_on = [f"{k} x{w}" for k, w in (("cycle", opts.cycle_weight), ("consistency", opts.consistency_weight),
                                               ("contrastive", opts.contrastive_weight)) if w > 0]
        log(f"[train] head: {len(selected)} layers, {x_train.shape[1]} features -> "
            f"{'linear' if opts.hidden == 0 else f'MLP {opts.hidden}'} -> {diffusion.num_classes} classes, "
            f"{n_params / 1e3:.1f} k parameters; {tc.steps} steps of batch {tc.batch_size} x {ctx.world_size} "
            f"worker(s); cross-entropy{''.join(' + ' + s for s in losses_on)}; flips {'on' if opts.flip else 'off'}")

    if z_train is not None:  # the cycle loss's denoiser time input and coefficients at the fixed t
        k = min(opts.cycle_batch, tc.batch_size)
        tt = torch.full((k,), float(opts.t), device=device)
        logsnr = diffusion.schedule.logsnr(tt)
        cyc_alpha, cyc_sigma = alpha_sigma(logsnr)
        cyc_time = time_input(logsnr, tt, diffusion.diffusion.time_input)
    embed = selected.index(mid) if opts.contrastive_weight > 0 else None

    metrics_file = run_dir / "metrics.jsonl"
    progress = Progress(tc.steps, "[train] step", unit="step", every_s=0.0, start=start, write=log)
    window: dict[str, list[float]] = {}
    hits, seen = 0, 0
    last_bundle: Path | None = resume
    max_norm = tc.grad_clip if tc.grad_clip > 0 else math.inf
    n = x_train.shape[0]
    rng_devices = [torch.cuda.current_device()] if device.type == "cuda" else []
    net.train()
    t_start = time.monotonic()
    for step in range(start + 1, tc.steps + 1):
        idx = sample_batch(n, tc.batch_size, tc.seed, step, ctx.rank).to(device)
        xb, yb = x_train[idx], y_train[idx]
        xf = x_flip[idx] if x_flip is not None else None
        if opts.flip and xf is not None:
            coin = torch.rand(len(idx), generator=step_generator(tc.seed, step, ctx.rank, "cpu", stream=FLIP_STREAM))
            coin = (coin < 0.5).to(device)[:, None]
            xb, xf = torch.where(coin, xf, xb), torch.where(coin, xb, xf)
        lr = lr_at(step, tc.lr, tc.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        b = xb.shape[0]
        both = opts.consistency_weight > 0
        inputs = torch.cat([xb, xf]) if both else xb  # one forward pass (DDP allows one per backward)
        with torch.random.fork_rng(devices=rng_devices):
            # dropout masks from the (seed, step, rank) stream: a resumed run trains as an uninterrupted one
            torch.manual_seed(step_generator(tc.seed, step, ctx.rank, "cpu", stream=DROPOUT_STREAM).initial_seed())
            logits_all, emb_all = net(inputs, embed=embed) if embed is not None else (net(inputs), None)
        logits = logits_all[:b].float()
        ce = F.cross_entropy(logits, yb)
        loss = ce
        parts = {"ce": ce}
        if both:
            parts["consistency"] = consistency_loss(logits, logits_all[b:])
            loss = loss + opts.consistency_weight * parts["consistency"]
        if emb_all is not None:
            parts["contrastive"] = contrastive_loss(*paired(emb_all[:b], yb), margin=opts.contrastive_margin)
            loss = loss + opts.contrastive_weight * parts["contrastive"]
        if z_train is not None:
            sub = idx[:k]
            z = z_train[sub]
            with torch.no_grad():
                eps_true = eps_prediction(diffusion, z, cyc_time, cyc_alpha, cyc_sigma, labels=y_train[sub])
            eps_soft = eps_prediction(diffusion, z, cyc_time, cyc_alpha, cyc_sigma,
                                      probs=torch.softmax(logits[:k], dim=1))
            parts["cycle"] = cycle_loss(eps_soft, eps_true)
            loss = loss + opts.cycle_weight * parts["cycle"]
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"[train] loss became {loss.item()} at step {step}; lower train.lr or check the data")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(head.parameters(), max_norm)
        optimizer.step()
        ema.update(head, step)
        window.setdefault("loss", []).append(loss.item())
        for name, value in parts.items():
            window.setdefault(name, []).append(value.item())
        hits += int((logits.argmax(dim=1) == yb).sum())
        seen += b
        if step % tc.log_every == 0 or step == tc.steps:
            means = {k_: sum(v) / len(v) for k_, v in window.items()}
            window.clear()
            acc = hits / seen
            hits, seen = 0, 0
            extra = " | ".join([f"loss {means['loss']:.4f}"] + [f"{k_} {v:.4f}" for k_, v in means.items()
                                                                if k_ not in ("loss", "ce")] + [f"acc {acc:.3f}",
                                                                                                f"lr {lr:.2e}"])
            progress.update(step - progress.done, extra=extra, force=True)
            if ctx.is_main:
                append_metrics(metrics_file, {"step": step, **means, "accuracy": acc, "lr": lr, "grad_norm": float(grad_norm),
                                       "elapsed_s": round(time.monotonic() - t_start, 2),
                                       "resumed_from_step": start})
        if step % tc.checkpoint_every == 0 or step == tc.steps:
            bundle = None
            report = {"step": step, "loss": loss.item()}
            if ctx.is_main:
                inference = ema.inference_model(head)
                if val_batches is not None:
                    val = evaluate(inference, val_batches, device)
                    head.train()  # evaluate() switched it to eval mode when it is the inference model
                    metadata.update(val_accuracy=val["accuracy"], val_loss=val["loss"])
                    report.update(val_accuracy=val["accuracy"], val_loss=val["loss"])
                    append_metrics(metrics_file, {"step": step, "val_loss": val["loss"], "val_accuracy": val["accuracy"]})
                    log(f"[train] step {step}: val accuracy {val['accuracy']:.3f} | val loss {val['loss']:.4f} "
                        f"({val['images']} images)")
                metadata.update(train_seconds=round(time.monotonic() - t_start + feature_seconds, 1))
                bundle = save_bundle(
                    ckpt_dir, step, inference, metadata,
                    train_state={"model": head, "optimizer": optimizer, "state": {"step": step, "ema": ema.state()}},
                    keep=tc.keep_checkpoints,
                )
                last_bundle = bundle
                log(f"[train] saved {bundle}")
            ctx.report(report, bundle)
    if ctx.is_main and metrics_file.is_file():
        plot_metrics(metrics_file, run_dir / "loss.png", "cross-entropy")
    if last_bundle is None and ctx.is_main:
        raise CheckpointError(f"{cfg.run_dir}: training finished without writing a checkpoint")
    return last_bundle


def _candidates(diffusion, opts: DCubeOptions) -> dict:
    candidates = candidate_layers(diffusion.denoiser, opts.granularity)
    if opts.layers:
        unknown = [n for n in opts.layers if n not in candidates]
        if unknown:
            raise ConfigError(f"method_options.layers: {unknown} are not {opts.granularity} layers of the frozen "
                              f"diffusion model; it has {list(candidates)}")
        candidates = {n: m for n, m in candidates.items() if n in opts.layers}
    return candidates


def _check_data(cfg: ExperimentConfig, diffusion, frozen_path: Path) -> None:
    want = (diffusion.image_size, diffusion.channels)
    if (cfg.data.image_size, cfg.data.channels) != want:
        raise ConfigError(
            f"data.image_size/channels: the frozen diffusion model {frozen_path} takes {want[0]} px images with "
            f"{want[1]} channel(s), the config asks for {cfg.data.image_size} px / {cfg.data.channels}; set "
            f"data.image_size={want[0]} data.channels={want[1]}"
        )


def _rule(opts: DCubeOptions) -> str:
    return "<" if opts.selection == "non_gaussian" else ">="


def _stack(features: dict[str, torch.Tensor], layers: list[str]) -> torch.Tensor:
    return torch.cat([features[n] for n in layers], dim=1)


def _batches(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(y), batch_size)]


def _check_resumable(bundle: Path, cfg: ExperimentConfig, metadata: dict) -> None:
    meta = json.loads((bundle / "metadata.json").read_text())
    if meta.get("kind") != KIND:
        raise CheckpointError(f"{bundle}: the run {cfg.run_dir} holds a {meta.get('kind')!r} checkpoint, not a {KIND}; "
                              f"give the run a new name")
    old, new = meta.get("dcube", {}), metadata["dcube"]
    keys = ("diffusion_model_id", "t", "input", "conditioning", "pool", "layers", "layer_dims")
    changed = [k for k in keys if old.get(k) != new.get(k)]
    # every option the head's training depends on (flips, loss weights, ...); where the frozen model lives and the
    # extraction batch size do not matter
    weights_opts = [dataclasses.replace(parse_options(config_from_json(c)), diffusion_checkpoint="-", extract_batch=1)
                    for c in (meta["config"], metadata["config"])]
    if weights_opts[0] != weights_opts[1]:
        changed.append("method_options")
    if changed or meta.get("model") != metadata["model"]:
        raise CheckpointError(f"{bundle}: the run {cfg.run_dir} was trained with different D-Cube settings "
                              f"({', '.join(changed) or 'head'}); resume needs the same frozen model, features and "
                              f"head, or give the run a new name")
    if meta.get("data_fingerprint") != metadata["data_fingerprint"]:
        raise CheckpointError(f"{bundle}: the training data changed since this run started; resume needs the same "
                              f"data, or give the run a new name")
