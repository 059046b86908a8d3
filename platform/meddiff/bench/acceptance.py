"""GPU acceptance run (``jobs/gpu_check.py``): does a production config train and score on this device, how fast, and
does bf16 decide as fp32 does?

Steps:
  1. Take the config (default ``jobs/configs/chexpert-unet-a100.yaml``: the paper's ADM-style UNet, 3 x 256 x 256 ->
     Haar 12 x 128 x 128) and train it for ``steps`` steps with the method's own training loop
     (``meddiff.methods.train_function``: ``train/loop.run_loop``, EMA, bundle), on synthetic phantoms at the config's
     image size (default) or on the config's data source under ``data_root``.
  2. Score K class-balanced test images with the paper's loop (``bench.reference``: per draw, per class, one forward;
     fixed N) and with the engine (``diffusion.streaming``: class-batched, continuous batching) at fixed N and with
     each stopping rule in ``rules``, every one in fp32 and in bf16 autocast (optionally with torch.compile).
  3. Checks (each a fraction against ``min_agreement``): for every scoring, the share of images whose bf16 decision
     equals the fp32 one (refer when the vote entropy is above the threshold that accepts 80 % of the images on the
     fp32 paper loop's full-N vote, else accept the predicted class: ``bench.decisions``); and the engine's fp32
     full-N class against the paper loop's (the same draws: only float rounding in another batch shape may differ).
  4. Figures, never assertions: images/s, NFE per image, MFU (achieved FLOP/s over the device's peak), peak GPU memory
     (``torch.cuda.max_memory_allocated``) or peak RSS on CPU, device, torch / CUDA versions and the code version.

Modes: ``gpu`` (CUDA present) runs the config's network at its size; ``cpu`` runs the same code paths with a tiny UNet
(the config's conditioning) at 32 px for a few steps on a few images at small N, so CI keeps every path working. The
JSON says which mode ran.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from meddiff.config import ExperimentConfig, load_config
from meddiff.errors import ConfigError
from meddiff.sizing.plan import TRAIN_FORWARDS

DEFAULT_CONFIG = "jobs/configs/chexpert-unet-a100.yaml"
MODES = ("auto", "gpu", "cpu")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
COVERAGE = 0.8  # decisions at the threshold that accepts 80 % of the images on the fp32 full-N vote
NEAR_TIE_BF16 = 1e-2  # a draw whose two best classes are this close (relative) may flip under bf16 rounding

# what ``mode`` fills in for settings left at 0 / empty
MODE_DEFAULTS = {
    "gpu": {"steps": 300, "images": 64, "n_draws": 0, "train_batch_size": 0, "slots": 0, "max_batch": 512},
    "cpu": {"steps": 4, "images": 4, "n_draws": 5, "train_batch_size": 8, "slots": 4, "max_batch": 256},
}
# the cpu mode's network: the config's conditioning and depth pattern at toy width, on 32 px images
CPU_MODEL = {"block_out_channels": [16, 32], "layers_per_block": 1, "attention": [False, True],
             "cross_attention_dim": 32, "attention_head_dim": 8, "norm_num_groups": 8}
CPU_IMAGE_SIZE = 32


@dataclass(frozen=True)
class AcceptanceConfig:
    """config: a production config (YAML) with ``method: diffusion``. mode: auto (gpu when CUDA is present), gpu, cpu.
    steps: training steps. data: ``synthetic`` trains and scores on phantoms at the config's image size; ``config``
    on the config's data source (implied by ``data_root``, which sets ``data.params.root``, e.g. the CheXpert folder).
    overrides: dotted config keys set last (``--set data.params.csv=...``). images: K test images scored. n_draws: N
    (0: the config's ``score.n_draws``). train_batch_size (0: the config's), slots: images in flight in the engine
    and per forward of the paper's loop (0: the config's ``score.batch_size``). max_batch: the engine's denoiser
    inputs per forward (512 on GPU: the paper UNet's 190 GFLOP per input saturate an A100 long before, and fp32
    activations, ~84 MB per input by ``sizing.footprint``, then fit in 80 GB; 256 on CPU). rules: stopping rules run
    besides fixed N (``rules.py``), at ``delta``. compile: torch.compile the engine's denoiser. min_agreement: the
    smallest agreement a check passes with. work_dir: where the training run goes ("" = a temporary folder, removed
    afterwards). 0 / "" settings take the mode's defaults (``MODE_DEFAULTS``)."""

    config: str = DEFAULT_CONFIG
    mode: str = "auto"
    steps: int = 0
    data: str = "synthetic"
    data_root: str = ""
    overrides: Mapping[str, Any] = field(default_factory=dict)
    images: int = 0
    n_draws: int = 0
    train_batch_size: int = 0
    slots: int = 0
    max_batch: int = 0
    rules: tuple[str, ...] = ("mixture", "futility")
    delta: float = 0.01
    compile: bool = False
    min_agreement: float = 0.9
    work_dir: str = ""

    def __post_init__(self) -> None:
        from meddiff.rules import stopping_rule

        if self.mode not in MODES:
            raise ConfigError(f"mode: expected one of {MODES}, got {self.mode!r}")
        if self.data not in ("synthetic", "config"):
            raise ConfigError(f"data: expected 'synthetic' (phantoms) or 'config' (the config's data source), got "
                              f"{self.data!r}")
        for key in ("steps", "images", "n_draws", "train_batch_size", "slots", "max_batch"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key}: expected 0 (the mode's default) or a positive integer, got "
                                  f"{getattr(self, key)!r}")
        if 0 < self.images < 2:
            raise ConfigError(f"images: expected at least 2 images to score, got {self.images}")
        for rule in self.rules:
            if stopping_rule(rule).name == "none":
                raise ConfigError("rules: 'none' (fixed N) always runs; list only early-exit rules")
        if not 0 < self.delta < 1:
            raise ConfigError(f"delta: expected a risk in (0, 1), got {self.delta!r}")
        if not 0 <= self.min_agreement <= 1:
            raise ConfigError(f"min_agreement: expected a fraction in [0, 1], got {self.min_agreement!r}")


def resolve_mode(mode: str) -> str:
    """``auto`` -> gpu when CUDA is present, else cpu; ``gpu`` without CUDA is an error, not a silent CPU run."""
    if mode == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if mode == "gpu" and not torch.cuda.is_available():
        raise ConfigError("mode: gpu requested but CUDA is not available on this machine; use --mode auto or cpu")
    return mode


def with_mode_defaults(acc: AcceptanceConfig, mode: str) -> AcceptanceConfig:
    """``acc`` with every 0 setting replaced by the mode's default (0 left for n_draws / sizes means: the config's)."""
    return replace(acc, **{k: v for k, v in MODE_DEFAULTS[mode].items() if getattr(acc, k) == 0})


def experiment_config(acc: AcceptanceConfig, mode: str, run_root: Path) -> ExperimentConfig:
    """The production config as this run trains it: ``acc.steps`` steps into ``run_root``, one bundle at the end,
    warm-up at most a fifth of the steps (so the short run reaches the config's learning rate), phantoms unless
    the config's data is asked for; in cpu mode the tiny UNet at 32 px and fp32; ``acc.overrides`` last."""
    base = load_config(acc.config)
    if base.method != "diffusion":
        raise ConfigError(f"{acc.config}: method: the acceptance run needs a diffusion config (method: diffusion), "
                          f"got {base.method!r}")
    steps = acc.steps
    overrides: dict[str, Any] = {
        "name": "gpu-check", "output_dir": str(run_root), "train.steps": steps, "train.checkpoint_every": steps,
        "train.keep_checkpoints": 1, "train.log_every": max(1, steps // 10),
        "train.warmup_steps": min(base.train.warmup_steps, steps // 5),
        "train.ema_warmup": min(base.train.ema_warmup, steps // 5),
    }
    if acc.train_batch_size:
        overrides["train.batch_size"] = acc.train_batch_size
    if mode == "cpu":
        overrides.update({"model.params": dict(base.model.params, **CPU_MODEL), "data.image_size": CPU_IMAGE_SIZE,
                          "train.precision": "fp32", "train.num_workers": 0})
    if acc.data_root:
        overrides["data.params"] = dict(base.data.params, root=acc.data_root)
    elif acc.data == "synthetic":
        # enough phantoms for K test images at the config's split fractions
        test_fraction = base.data.split_fractions[2]
        n_per_class = max(16, int(np.ceil(acc.images / test_fraction / 2 * 1.25)))
        overrides.update({"data.source": "phantom", "data.params": {"n_per_class": n_per_class, "seed": 0},
                          "data.derive": {}, "data.cv_folds": 0})
    return load_config(acc.config, {**overrides, **acc.overrides})


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def vote_margins(errors: torch.Tensor) -> torch.Tensor:
    """[B, C, N] per-draw errors -> [B, N] relative gap between the two lowest errors (0: a tie)."""
    two = errors.topk(2, dim=1, largest=False).values
    return (two[:, 1] - two[:, 0]) / two[:, 1].abs().clamp(min=1e-12)


@dataclass
class Scoring:
    """One variant's outputs on the K images, in image order."""

    name: str
    kind: str  # "reference" or "engine"
    rule: str
    precision: str
    compiled: bool
    seconds: float
    pred: np.ndarray
    uncertainty: np.ndarray
    nfe: np.ndarray
    peak_gpu_mib: float
    peak_rss_mib: float
    errors: torch.Tensor | None = None  # [K, C, N] for fixed-N variants


def score_reference(model, x: torch.Tensor, seeds: list[int], n_draws: int, spec, batch: int,
                    precision: str) -> Scoring:
    """The paper's loop over the K images in batches of ``batch``, under autocast for bf16."""
    from meddiff.bench.reference import reference_errors
    from meddiff.bench.run import PeakMemory
    from meddiff.diffusion.engine import summarize

    device = x.device
    dtype = PRECISIONS[precision]
    amp = torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None)
    with amp:  # warm-up: kernel selection off the clock
        reference_errors(model.denoiser, x[:1], seeds[:1], 1, spec)
    with PeakMemory() as mem:
        _sync(device)
        t0 = time.perf_counter()
        with amp:
            errors = torch.cat([reference_errors(model.denoiser, x[i:i + batch], seeds[i:i + batch], n_draws, spec)
                                for i in range(0, len(seeds), batch)])
        _sync(device)
        seconds = time.perf_counter() - t0
    errors = errors.float().cpu()
    s = summarize(errors)
    return Scoring(f"reference, {precision}", "reference", "none", precision, False, seconds, s.pred_vote.numpy(),
                   s.uncertainty.numpy(), np.full(len(seeds), n_draws * model.num_classes), mem.cuda_peak, mem.peak,
                   errors)


def score_engine(denoiser, model, x: torch.Tensor, seeds: list[int], spec, stream, precision: str,
                 compiled: bool) -> Scoring:
    """The streaming engine (``stream.rule``) over the K images with ``spec.autocast_dtype`` set by ``precision``."""
    from meddiff.bench.run import PeakMemory
    from meddiff.diffusion.streaming import StreamSpec, stream_classify

    device = x.device
    spec = replace(spec, autocast_dtype=PRECISIONS[precision])
    # warm-up (and compilation) off the clock, at the shapes of a full step
    warm = StreamSpec(n_draws=min(stream.chunk, stream.n_draws), chunk=stream.chunk, slots=stream.slots)
    for _ in stream_classify(denoiser, ((i, x[i], seeds[i]) for i in range(min(len(seeds), stream.slots))), spec,
                             warm):
        pass
    with PeakMemory() as mem:
        _sync(device)
        t0 = time.perf_counter()
        res = dict(stream_classify(denoiser, ((i, x[i], seeds[i]) for i in range(len(seeds))), spec, stream))
        _sync(device)
        seconds = time.perf_counter() - t0
    k = range(len(seeds))
    name = ("engine" if stream.rule == "none" else f"{stream.rule}@{stream.delta:g}") + f", {precision}"
    name += ", compiled" if compiled else ""
    errors = torch.stack([res[i].errors for i in k]).float().cpu() if stream.rule == "none" else None
    return Scoring(name, "engine", stream.rule, precision, compiled, seconds,
                   np.array([res[i].pred_vote for i in k]), np.array([res[i].uncertainty for i in k]),
                   np.array([res[i].n_draws * model.num_classes for i in k]), mem.cuda_peak, mem.peak, errors)


def device_info(device: torch.device) -> dict[str, Any]:
    """Device name, torch / CUDA / cuDNN versions, TF32 settings (they decide what "fp32" means on an A100)."""
    from meddiff.bench.run import machine
    from meddiff.provenance import code_version

    info = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
            else machine()["cpu"], "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "code_version": code_version(), "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["tf32"] = {"cudnn_conv": torch.backends.cudnn.allow_tf32,
                        "matmul": torch.backends.cuda.matmul.allow_tf32}
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    return info


def peak_flops(device: torch.device, log: Callable[[str], None]) -> dict[str, Any]:
    """Peak FLOP/s per precision the MFU is taken over. A known GPU (``sizing.hardware.GPUS``, matched by name): its
    datasheet's dense bf16 peak, and for fp32 the TF32 tensor-core peak when cuDNN may use TF32 (PyTorch's default for
    convolutions), else the fp32 one. Another device: a square matmul measured here (``bench.run.matmul_peak``: bf16
    on CUDA, fp32 on CPU), used for both precisions."""
    from meddiff.bench.run import matmul_peak
    from meddiff.sizing.hardware import GPUS

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device).lower()
        known = [key for key in GPUS if key in name]
        if known:
            gpu = GPUS[known[0]]
            fp32 = gpu.tf32_flops if torch.backends.cudnn.allow_tf32 else gpu.fp32_flops
            log(f"[gpu-check] peaks from the {gpu.name} datasheet: bf16 {gpu.bf16_flops / 1e12:.0f}, fp32 "
                f"{fp32 / 1e12:.1f} TFLOP/s")
            return {"fp32": fp32, "bf16": gpu.bf16_flops,
                    "source": f"datasheet of the {gpu.name} (meddiff.sizing.hardware); fp32 = "
                              + ("TF32 tensor cores (cudnn.allow_tf32)" if torch.backends.cudnn.allow_tf32
                                 else "fp32 CUDA cores")}
    measured = matmul_peak(device, 3.0 if device.type == "cuda" else 1.0)
    log(f"[gpu-check] measured matmul peak {measured / 1e12:.3f} TFLOP/s on {device}")
    return {"fp32": measured, "bf16": measured, "source": f"measured square matmul on {device} (bench.run.matmul_peak)"}


def train_run(cfg: ExperimentConfig, log: Callable[[str], None]) -> tuple[Path, dict[str, Any]]:
    """Train ``cfg`` with its method's loop; the bundle and the training figures (steps/s from the loop's own clock
    in metrics.jsonl, final loss, peak GPU memory)."""
    from meddiff.bench.run import PeakMemory
    from meddiff.methods import train_function

    with PeakMemory() as mem:
        t0 = time.perf_counter()
        try:
            bundle = train_function(cfg.method)(cfg)
        except torch.cuda.OutOfMemoryError:
            raise ConfigError(f"{cfg.model.name}: training ran out of GPU memory at train.batch_size "
                              f"{cfg.train.batch_size}; lower it with --train-batch-size") from None
        wall = time.perf_counter() - t0
    records = [json.loads(line) for line in (Path(cfg.run_dir) / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if "loss" in r][-1]
    seconds = float(last["elapsed_s"])
    steps = cfg.train.steps
    figures = {"steps": steps, "batch_size": cfg.train.batch_size, "precision": cfg.train.precision,
               "loop_seconds": round(seconds, 2), "wall_seconds": round(wall, 2),
               "steps_per_s": round(steps / seconds, 3),
               "images_per_s": round(steps * cfg.train.batch_size / seconds, 2),
               "final_loss": round(float(last["loss"]), 5), "peak_gpu_mib": round(mem.cuda_peak, 1),
               "peak_rss_mib": round(mem.peak, 1)}
    log(f"[gpu-check] trained {steps} steps of batch {cfg.train.batch_size} in {seconds:.1f} s "
        f"({figures['images_per_s']} images/s), loss {figures['final_loss']}, peak GPU memory "
        f"{figures['peak_gpu_mib']:.0f} MiB")
    return bundle, figures


def variant_row(s: Scoring, flops_per_forward: float, peaks: dict[str, Any], ref: Scoring) -> dict[str, Any]:
    """The JSON row of one scoring: throughput, NFE, achieved FLOP/s and MFU, memory, class agreement with the fp32
    paper loop's full-N vote."""
    from meddiff.bench.decisions import nfe_quantiles

    achieved = flops_per_forward * float(s.nfe.sum()) / s.seconds
    return {"name": s.name, "kind": s.kind, "rule": s.rule, "precision": s.precision, "compiled": s.compiled,
            "images": len(s.pred), "seconds": round(s.seconds, 3), "images_per_s": round(len(s.pred) / s.seconds, 4),
            "seconds_per_image": round(s.seconds / len(s.pred), 4), "nfe_per_image": round(float(s.nfe.mean()), 1),
            **{k: round(v, 1) for k, v in nfe_quantiles(s.nfe).items()},
            "achieved_tflops": round(achieved / 1e12, 4), "mfu": round(achieved / peaks[s.precision], 4),
            "peak_gpu_mib": round(s.peak_gpu_mib, 1), "peak_rss_mib": round(s.peak_rss_mib, 1),
            "class_agreement_with_fp32_reference": round(float((s.pred == ref.pred).mean()), 4)}


def agreement_checks(scorings: list[Scoring], threshold: float, labels: np.ndarray, min_agreement: float
                     ) -> list[dict[str, Any]]:
    """bf16 against fp32 for every scoring (decision and class agreement, per-draw vote flips where both have the
    full-N errors) and the engine's fp32 full-N class against the paper loop's; each check passes at
    ``min_agreement``."""
    from meddiff.bench.decisions import decision_stats

    by_name = {s.name: s for s in scorings}
    checks = []
    for s in scorings:
        if s.precision != "bf16":
            continue
        base = by_name.get(s.name.replace("bf16", "fp32"))
        if base is None:  # its fp32 partner failed ("every variant ran" says so)
            continue
        stats = decision_stats(s.pred, s.uncertainty, base.pred, base.uncertainty, labels, {COVERAGE: threshold})
        key = round(COVERAGE * 100)
        check = {"name": f"bf16 vs fp32 decisions: {base.name.replace(', fp32', '')}", "kind": "decision agreement",
                 "value": stats[f"decision_agreement_{key}"], "threshold": min_agreement,
                 "disagreements": stats[f"decision_disagreements_{key}"],
                 "class_agreement": round(float((s.pred == base.pred).mean()), 4)}
        if s.errors is not None and base.errors is not None:
            flips = s.errors.argmin(dim=1) != base.errors.argmin(dim=1)
            check["draw_vote_flips"] = round(float(flips.double().mean()), 5)
            check["fp32_draws_within_1pct"] = round(float((vote_margins(base.errors) < NEAR_TIE_BF16).double().mean()),
                                                   5)
        checks.append(check)
    ref = by_name.get("reference, fp32")
    eng = next((s for s in scorings if s.kind == "engine" and s.rule == "none" and s.precision == "fp32"), None)
    if ref is not None and eng is not None:
        checks.append({"name": "engine vs paper loop, fp32, full N: class", "kind": "class agreement",
                       "value": round(float((eng.pred == ref.pred).mean()), 4), "threshold": min_agreement,
                       "disagreements": int((eng.pred != ref.pred).sum())})
    for c in checks:
        c["passed"] = bool(c["value"] >= c["threshold"])
    return checks


def run_acceptance(acc: AcceptanceConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train, score every variant, check; returns the result dict (``write_result`` writes it as JSON)."""
    from meddiff.bench.decisions import coverage_threshold
    from meddiff.bench.run import bench_images, forward_flops
    from meddiff.diffusion.engine import EngineSpec
    from meddiff.device import autocast_dtype
    from meddiff.diffusion.model import load_diffusion_model
    from meddiff.diffusion.noise import image_seed
    from meddiff.diffusion.streaming import StreamSpec

    mode = resolve_mode(acc.mode)
    acc = with_mode_defaults(acc, mode)
    device = torch.device("cuda" if mode == "gpu" else "cpu")
    info = device_info(device)
    log(f"[gpu-check] {mode} mode on {info['device_name']}, torch {info['torch']}, CUDA {info['cuda']}, "
        f"{info['code_version']}")
    work = Path(acc.work_dir) if acc.work_dir else Path(tempfile.mkdtemp(prefix="meddiff-gpu-check-"))
    try:
        cfg = experiment_config(acc, mode, work)
        n_draws = acc.n_draws or cfg.score.n_draws
        slots = acc.slots or cfg.score.batch_size
        peaks = peak_flops(device, log)
        bundle, train = train_run(cfg, log)
        model = load_diffusion_model(bundle, device)
        flops = forward_flops(model)
        train_precision = "bf16" if autocast_dtype(device, cfg.train.precision) is not None else "fp32"
        n_params = sum(p.numel() for p in model.denoiser.parameters())
        log(f"[gpu-check] {cfg.model.name}: {n_params / 1e6:.1f} M parameters, input {list(model.model_shape)}, "
            f"{flops / 1e9:.2f} GFLOP per forward")
        _, frame, x = bench_images(model, acc.images)
        labels = frame["label"].to_numpy()
        seeds = [image_seed(cfg.score.seed, str(i)) for i in frame["id"]]
        spec = EngineSpec(num_classes=model.num_classes, schedule=model.schedule, time_kind=model.diffusion.time_input,
                          error_target=cfg.score.error_target, max_batch=acc.max_batch,
                          channels_last=device.type == "cuda")
        if spec.channels_last:
            model.denoiser.to(memory_format=torch.channels_last)
        log(f"[gpu-check] scoring {len(seeds)} images at N = {n_draws}, {slots} images per batch")

        scorings: list[Scoring] = []
        failures: list[dict[str, Any]] = []

        def done(run: Callable[[], Scoring], name: str) -> None:
            try:
                s = run()
            except torch.cuda.OutOfMemoryError as exc:  # recorded, the other variants still run
                torch.cuda.empty_cache()
                failures.append({"name": name, "error": f"out of GPU memory: {str(exc).splitlines()[0]}"})
                log(f"[gpu-check] {name}: out of GPU memory; lower --max-batch / --slots")
                return
            scorings.append(s)
            log(f"[gpu-check] {s.name:28s} {len(s.pred) / s.seconds:9.4f} images/s  NFE/image {s.nfe.mean():7.1f}  "
                f"peak GPU {s.peak_gpu_mib:8.0f} MiB")

        for precision in PRECISIONS:
            done(lambda: score_reference(model, x, seeds, n_draws, spec, slots, precision), f"reference, {precision}")
        if not scorings or scorings[0].name != "reference, fp32":
            raise ConfigError(f"the paper's loop in fp32 ran out of GPU memory at {slots} images per forward; lower "
                              f"--slots")
        ref = scorings[0]
        threshold = coverage_threshold(ref.uncertainty, COVERAGE)
        denoiser = torch.compile(model.denoiser) if acc.compile else model.denoiser
        for rule in ("none", *acc.rules):
            stream = StreamSpec(n_draws=n_draws, rule=rule, delta=acc.delta, chunk=cfg.score.chunk_draws, slots=slots,
                                refer_above=threshold)
            for precision in PRECISIONS:
                done(lambda: score_engine(denoiser, model, x, seeds, spec, stream, precision, acc.compile),
                     f"{rule}, {precision}")
        if peaks["source"].startswith("measured"):
            # measured again and the better kept: on a shared machine one short window can be unlucky
            best = max(peaks["fp32"], peak_flops(device, log)["fp32"])
            peaks.update(fp32=best, bf16=best)
        train["mfu"] = round(TRAIN_FORWARDS * flops * train["images_per_s"] / peaks[train_precision], 4)
        checks = agreement_checks(scorings, threshold, labels, acc.min_agreement)
        checks.append({"name": "every variant ran", "kind": "variants without error",
                       "value": round(len(scorings) / (len(scorings) + len(failures)), 4), "threshold": 1.0,
                       "failures": failures, "passed": not failures})
        for c in checks:
            log(f"[gpu-check] {'PASS' if c['passed'] else 'FAIL'} {c['name']}: {c['value']:.4f} "
                f"(at least {c['threshold']})")
        return {
            "mode": mode, **info, "config": acc.config, "settings": asdict(acc),
            "model": {"name": cfg.model.name, "params": dict(cfg.model.params), "parameters": n_params,
                      "input": list(model.model_shape), "image_size": cfg.data.image_size,
                      "data": cfg.data.source, "flops_per_forward": flops},
            "peak_flops": peaks, "train": train, "images": len(seeds), "n_draws": n_draws,
            "classes": model.num_classes, "referral_threshold": threshold, "coverage": COVERAGE,
            "variants": [variant_row(s, flops, peaks, ref) for s in scorings], "checks": checks,
            "passed": all(c["passed"] for c in checks),
        }
    finally:
        if not acc.work_dir:
            shutil.rmtree(work, ignore_errors=True)


def write_result(result: dict[str, Any], path: str | Path) -> Path:
    """The result as indented JSON at ``path`` (folders created; written atomically)."""
    from meddiff.durable import atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    return path


def print_summary(result: dict[str, Any], path: Path, write: Callable[[str], None] = print) -> None:
    """One line per variant and per check, then where the JSON went and whether the run passed."""
    t = result["train"]
    write(f"[gpu-check] {result['mode']} mode, {result['device_name']}: {result['model']['parameters'] / 1e6:.1f} M "
          f"parameters, {result['images']} images, N = {result['n_draws']}; training {t['images_per_s']} images/s "
          f"(MFU {t['mfu']:.3f}, peak GPU {t['peak_gpu_mib']:.0f} MiB)")
    write(f"{'variant':30s} {'images/s':>10s} {'NFE/image':>10s} {'MFU':>7s} {'peak GPU MiB':>13s} "
          f"{'peak RSS MiB':>13s}")
    for v in result["variants"]:
        write(f"{v['name']:30s} {v['images_per_s']:10.4f} {v['nfe_per_image']:10.1f} {v['mfu']:7.4f} "
              f"{v['peak_gpu_mib']:13.0f} {v['peak_rss_mib']:13.0f}")
    for c in result["checks"]:
        write(f"{'PASS' if c['passed'] else 'FAIL'} {c['name']}: {c['value']:.4f} (at least {c['threshold']})")
    write(f"[gpu-check] {'passed' if result['passed'] else 'FAILED'}; wrote {path}")
