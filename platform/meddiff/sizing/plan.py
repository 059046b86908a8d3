"""The capacity plan of a config on GPUs (``meddiff plan``): from the networks' footprint (``sizing.footprint``), a
GPU from ``sizing.hardware`` and the config, what fits, how long training and scoring take, and the Ray resources.

Assumptions (each is a parameter or a constant below, printed with the plan):
- Memory. Training holds, per trained network, float32 weights (4 bytes per parameter), float32 gradients (4), Adam's
  two moments (8) and, when the method keeps one, the EMA copy (4); frozen networks their float32 weights; plus the
  activations autograd saves per image (``Footprint.train_activation_bytes_per_image``; frozen networks, run under
  no_grad, their inference peak). ``MEMORY_MARGIN`` of the GPU is kept free for the CUDA context, cuDNN workspaces,
  allocator fragmentation and the backward pass's transients. Scoring holds the weights and the inference peak of
  the forward batch (images in flight x forwards per image sharing the batch).
- Time. A training step costs 3 forward FLOPs per trained-network forward (forward + backward, the backward twice the
  forward: Kaplan et al. 2020, "Scaling laws for neural language models", sec. 2.1) and 1 per frozen forward; scoring
  costs ``score_forwards`` forwards per image. Seconds = FLOPs / (GPUs x dense peak x MFU), with the peak of the
  config's precision (``GPU.peak_flops``). The config's global batch (``train.batch_size`` per worker x
  ``ray.num_workers``) and ``train.steps`` are kept and spread over the GPUs (data parallel); communication and data
  loading are taken as hidden behind compute (the MFU absorbs what is not).
- MFU (``DEFAULT_MFU`` = 0.30, ``--mfu``): model FLOP utilisation, achieved model FLOP/s over dense peak. 0.30 is a
  middle value for convolutional UNets and ViT-B-sized transformers in bf16 at batches of 32-128 on A100s: large
  transformer training reaches 0.4-0.5 (Chowdhery et al. 2022, PaLM, Table 3: 46.2 %), networks of this size with
  GroupNorm, small attention maps and many small kernels reach less; the paper's own timing (3.72 s per image at
  N = 501 on an A100) implies 0.16 of the bf16 peak or 0.33 of the TF32 peak for the 190 GFLOP forward, see README.
  A measured value from ``meddiff bench`` on the target GPU (its ``mfu`` column) should replace it.
- Early exit. ``meddiff bench`` measures each stopping rule's mean forwards per image on real images; the plan
  divides the draw-scaled networks' forwards (those run n_draws x classes times) by the bench's reduction
  (reference NFE / rule NFE). The reduction depends on the model, the data and N (it grows with N).
- Ray. Scoring actors hold one copy of the scoring networks each; a GPU is compute-bound with one actor whose batch
  fills it, so one actor per GPU (``ray.gpus_per_actor`` of the config below 1 asks for more: they are checked
  against memory). An actor decodes its own images: CPUs per actor = the GPU's images/s over the decode rate of one
  core (``--decode-rate``, images/s/core, measured by ``meddiff.bench.datapath``); a training worker likewise needs
  its GPU's training images/s over that rate.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from meddiff.config import ExperimentConfig
from meddiff.errors import ConfigError, MeddiffError
from meddiff.sizing.hardware import GPU

if TYPE_CHECKING:  # footprint imports torch; the CLI's parser imports this module for its defaults
    from meddiff.sizing.footprint import Footprint

MEMORY_MARGIN = 0.10
DEFAULT_MFU = 0.30
TRAIN_FORWARDS = 3  # a training step of a trained network costs ~3 forwards (forward + backward's two products)
ADAM_TRAINING_BYTES = 4 + 4 + 8  # float32 weight, gradient, Adam m and v per trained parameter
EMA_BYTES = 4


class BenchFileError(MeddiffError):
    """A ``--bench`` file that is not a ``meddiff bench`` bench.json."""


@dataclass(frozen=True)
class EarlyExit:
    """One stopping rule of a bench run: its name there, NFE reduction vs the full N, agreement with the full-N vote,
    and what it makes of the plan's scoring."""

    rule: str
    nfe_reduction: float
    agreement: float
    seconds_per_image: float
    cohort_gpu_hours: float


@dataclass(frozen=True)
class Plan:
    """A config projected onto ``gpus`` x ``gpu``. Bytes in bytes, FLOPs in FLOPs, times in seconds / hours."""

    config: str
    method: str
    gpu: str
    gpus: int
    precision: str
    score_precision: str
    mfu: float
    memory_margin: float
    networks: dict[str, "Footprint"]
    parameters: int
    trainable_parameters: int
    # training
    train_static_bytes: int
    train_bytes_per_image: int
    train_max_batch_per_gpu: int
    train_global_batch: int
    train_batch_per_gpu: int
    train_fits: bool
    train_flops_per_image: float
    train_steps: int
    train_hours: float
    train_gpu_hours: float
    train_images_per_s: float
    # scoring
    n_draws: int
    classes: int
    draws: bool
    score_forwards: dict[str, float]
    score_flops_per_image: float
    score_seconds_per_image: float
    score_images_per_s: float
    score_weight_bytes: int
    score_bytes_per_image: int
    score_max_images_in_flight: int
    score_images_in_flight: int
    cohort: int
    cohort_gpu_hours: float
    cohort_hours: float
    early_exit: tuple[EarlyExit, ...] = ()
    early_exit_note: str = ""
    # Ray
    actors_per_gpu: int = 1
    actor_images_per_s: float = 0.0
    decode_rate: float | None = None
    cpus_per_actor: int | None = None
    cpus_per_worker: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _global_batch(cfg: ExperimentConfig) -> int:
    return cfg.train.batch_size * max(1, cfg.ray.num_workers)


def training_bytes(fp: Mapping[str, Footprint]) -> tuple[int, int]:
    """(static bytes, bytes per image) of one training step's memory on one GPU."""
    static, per_image = 0, 0
    for f in fp.values():
        if f.trained:
            static += f.parameters * (ADAM_TRAINING_BYTES + (EMA_BYTES if f.ema else 0))
            static += f.weight_bytes - 4 * f.parameters  # buffers
            if f.train_forwards:
                static += f.train_activation_bytes_fixed
                per_image += f.train_activation_bytes_per_image * f.train_forwards
        else:
            static += f.weight_bytes
            if f.train_forwards:
                static += f.inference_activation_bytes_fixed
                per_image += f.inference_activation_bytes_per_image * f.train_forwards
    return static, int(per_image)


def train_flops_per_image(fp: Mapping[str, Footprint]) -> float:
    """FLOPs of one training image in one step: 3 x forward for trained networks, 1 x for frozen ones."""
    return sum(f.flops_per_forward * f.train_forwards * (TRAIN_FORWARDS if f.trained else 1) for f in fp.values())


def read_bench(path: str | Path) -> dict[str, Any]:
    """A ``meddiff bench`` bench.json (keys ``n_draws`` and ``variants`` [{name, nfe_per_image, agreement}, ...],
    the first the full-N ``reference``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BenchFileError(f"--bench {path}: cannot read it as JSON ({e}); give the bench.json `meddiff bench` "
                             f"writes") from None
    variants = data.get("variants") if isinstance(data, dict) else None
    if not isinstance(variants, list) or not variants or "n_draws" not in data:
        raise BenchFileError(f"--bench {path}: expected `meddiff bench`'s bench.json with keys n_draws and variants "
                             f"(a list of rows with name, nfe_per_image, agreement)")
    for i, v in enumerate(variants):
        missing = [k for k in ("name", "nfe_per_image", "agreement") if not isinstance(v, dict) or k not in v]
        if missing:
            raise BenchFileError(f"--bench {path}: variants[{i}] has no {missing}")
        if not v["nfe_per_image"] > 0:
            raise BenchFileError(f"--bench {path}: variants[{i}] ({v['name']}): nfe_per_image must be > 0, got "
                                 f"{v['nfe_per_image']}")
    if not any(v["name"] == "reference" for v in variants):
        raise BenchFileError(f"--bench {path}: no `reference` variant (the full-N loop the reductions are taken "
                             f"against)")
    return data


def early_exit_rows(bench: Mapping[str, Any]) -> list[tuple[str, float, float]]:
    """(rule, NFE reduction vs the reference's full N, agreement) of every variant that stops early (reduction > 1)."""
    variants = bench["variants"]
    ref = next(v for v in variants if v["name"] == "reference")
    rows = []
    for v in variants:
        reduction = ref["nfe_per_image"] / v["nfe_per_image"]
        if v["name"] != "reference" and reduction > 1.0 + 1e-9:
            rows.append((str(v["name"]), reduction, float(v["agreement"])))
    return rows


def check_options(gpus: int, mfu: float, decode_rate: float | None) -> None:
    """The plan's own options (before anything is measured)."""
    if gpus < 1:
        raise ConfigError(f"--gpus: expected at least 1 GPU, got {gpus}")
    if not 0.0 < mfu <= 1.0:
        raise ConfigError(f"--mfu: expected a utilisation in (0, 1], got {mfu}")
    if decode_rate is not None and not decode_rate > 0:
        raise ConfigError(f"--decode-rate: expected images/s per CPU core > 0, got {decode_rate}")


def make_plan(cfg: ExperimentConfig, fp: Mapping[str, Footprint], gpu: GPU, gpus: int, classes: int,
              mfu: float = DEFAULT_MFU, cohort: int = 0, bench: Mapping[str, Any] | None = None,
              decode_rate: float | None = None, margin: float = MEMORY_MARGIN, config_name: str = "",
              votes: bool = False) -> Plan:
    """The plan of ``cfg`` (its networks' footprint ``fp``) on ``gpus`` x ``gpu``.

    votes: the method classifies by draws whose count early exit cuts (the registry's ``votes``); only then does a
    bench file give early-exit rows.
    """
    check_options(gpus, mfu, decode_rate)
    notes: list[str] = []
    usable = gpu.memory_bytes * (1.0 - margin)
    precision = cfg.train.precision
    peak = gpu.peak_flops(precision)

    # 1. training: memory, the largest batch per GPU, time
    static, per_image = training_bytes(fp)
    max_batch = int((usable - static) // per_image) if per_image and usable > static else (0 if per_image else 10**9)
    global_batch = _global_batch(cfg)
    batch_per_gpu = math.ceil(global_batch / gpus)
    fits = batch_per_gpu <= max_batch
    if not fits:
        accumulate = math.ceil(batch_per_gpu / max(max_batch, 1))
        notes.append(f"training: {batch_per_gpu} images per GPU do not fit ({max_batch} do): use more GPUs, "
                     f"{accumulate} gradient-accumulation steps, or gradient checkpointing")
    t_flops = train_flops_per_image(fp)
    train_total = cfg.train.steps * global_batch * t_flops
    train_seconds = train_total / (gpus * peak * mfu)
    train_rate = peak * mfu / t_flops if t_flops else float("inf")  # images per second per GPU

    # 2. scoring: forwards and FLOPs per image, memory, cohort
    scoring = {n: f for n, f in fp.items() if f.score_forwards > 0}
    draw_scaled = {n for n, f in scoring.items() if votes and f.score_forwards == cfg.score.n_draws * classes}
    s_flops = sum(f.flops_per_forward * f.score_forwards for f in scoring.values())
    score_peak = gpu.peak_flops(cfg.score.precision)
    score_seconds = s_flops / (score_peak * mfu)
    images_per_s = 1.0 / score_seconds if score_seconds else float("inf")
    weights = sum(f.weight_bytes for f in scoring.values())
    # images in flight share one forward batch: a diffusion classifier runs every class of every image in it
    share = {n: (classes if n in draw_scaled else 1) for n in scoring}
    act_per_image = int(max((f.inference_activation_bytes_per_image * share[n] for n, f in scoring.items()), default=0))
    act_fixed = max((f.inference_activation_bytes_fixed for f in scoring.values()), default=0)
    free = usable - weights - act_fixed
    max_in_flight = int(free // act_per_image) if act_per_image and free > 0 else 0
    in_flight = cfg.score.batch_size
    if in_flight > max_in_flight:
        notes.append(f"scoring: score.batch_size {in_flight} images in flight do not fit one GPU ({max_in_flight} do)")
    cohort_gpu_h = cohort * score_seconds / 3600.0

    # 3. early exit from a bench run
    rows: list[EarlyExit] = []
    if bench is None:
        ee_note = ("full N only: give --bench bench.json (from `meddiff bench --checkpoint RUN`) for the early-exit "
                   "rows" if draw_scaled else "")
    elif not draw_scaled:
        ee_note = f"method {cfg.method!r} has no draws to stop early: the bench file is not used"
    else:
        ee_note = f"NFE reductions measured by meddiff bench at N = {bench['n_draws']}"
        if int(bench["n_draws"]) != cfg.score.n_draws:
            ee_note += f" (this config scores at N = {cfg.score.n_draws}: the reduction at its N differs)"
        fixed = sum(f.flops_per_forward * f.score_forwards for n, f in scoring.items() if n not in draw_scaled)
        scaled = s_flops - fixed
        for rule, reduction, agreement in early_exit_rows(bench):
            sec = (fixed + scaled / reduction) / (score_peak * mfu)
            rows.append(EarlyExit(rule, round(reduction, 3), agreement, sec, cohort * sec / 3600.0))

    # 4. Ray: actors per GPU (memory-checked), CPUs per actor from the decode rate
    asked = max(1, int(round(1.0 / cfg.ray.gpus_per_actor))) if cfg.ray.gpus_per_actor > 0 else 1
    per_actor = weights + act_fixed + act_per_image * in_flight
    fit_actors = int(usable // per_actor) if per_actor else asked
    actors = max(1, min(asked, fit_actors))
    if actors < asked:
        notes.append(f"ray: gpus_per_actor {cfg.ray.gpus_per_actor} asks for {asked} actors per GPU; {fit_actors} fit")
    actor_rate = images_per_s / actors
    cpus = math.ceil(actor_rate / decode_rate) if decode_rate else None
    worker_cpus = math.ceil(train_rate / decode_rate) if decode_rate else None
    if cpus is not None and cpus > cfg.ray.cpus_per_actor:
        notes.append(f"ray: decoding bounds scoring: an actor needs {cpus} CPUs to keep its GPU share busy; with the "
                     f"config's ray.cpus_per_actor = {cfg.ray.cpus_per_actor:g} it decodes "
                     f"{cfg.ray.cpus_per_actor * decode_rate:.3g} images/s ({100 * cfg.ray.cpus_per_actor / cpus:.0f} "
                     f"% of the GPU's rate)")

    params = sum(f.parameters for f in fp.values())
    trainable = sum(f.trainable_parameters for f in fp.values())
    return Plan(
        config=config_name or cfg.name, method=cfg.method, gpu=gpu.name, gpus=gpus, precision=precision,
        score_precision=cfg.score.precision, mfu=mfu,
        memory_margin=margin, networks=dict(fp), parameters=params, trainable_parameters=trainable,
        train_static_bytes=int(static), train_bytes_per_image=per_image, train_max_batch_per_gpu=max_batch,
        train_global_batch=global_batch, train_batch_per_gpu=batch_per_gpu, train_fits=fits,
        train_flops_per_image=t_flops, train_steps=cfg.train.steps, train_hours=train_seconds / 3600.0,
        train_gpu_hours=train_seconds * gpus / 3600.0, train_images_per_s=train_rate, n_draws=cfg.score.n_draws, classes=classes,
        draws=bool(draw_scaled),
        score_forwards={n: f.score_forwards for n, f in fp.items()}, score_flops_per_image=s_flops,
        score_seconds_per_image=score_seconds, score_images_per_s=images_per_s, score_weight_bytes=int(weights),
        score_bytes_per_image=act_per_image, score_max_images_in_flight=max_in_flight, score_images_in_flight=in_flight,
        cohort=cohort, cohort_gpu_hours=cohort_gpu_h, cohort_hours=cohort_gpu_h / gpus, early_exit=tuple(rows),
        early_exit_note=ee_note, actors_per_gpu=actors, actor_images_per_s=actor_rate, decode_rate=decode_rate,
        cpus_per_actor=cpus, cpus_per_worker=worker_cpus, notes=tuple(notes),
    )


_FOOTPRINTS: dict[tuple[str, str], dict] = {}


def config_footprint(path: Path) -> dict[str, "Footprint"]:
    """``footprint(path)``, measured once per process for a config file's content (planning one config for several
    GPUs or options measures its networks once)."""
    import hashlib

    from meddiff.sizing.footprint import footprint

    key = (str(path.resolve()), hashlib.sha256(path.read_bytes()).hexdigest())
    if key not in _FOOTPRINTS:
        _FOOTPRINTS[key] = footprint(path)
    return _FOOTPRINTS[key]


def plan_config(config: str | Path, gpu: str = "a100", gpus: int = 1, mfu: float = DEFAULT_MFU, cohort: int = 0,
                bench: str | Path | None = None, decode_rate: float | None = None,
                margin: float = MEMORY_MARGIN) -> Plan:
    """``meddiff plan``: the config file's networks measured on the meta device, projected onto ``gpus`` x ``gpu``."""
    from meddiff.config import load_config, resolve_config_path
    from meddiff.methods import get_method
    from meddiff.sizing.hardware import get_gpu
    from meddiff.sizing.networks import num_classes

    check_options(gpus, mfu, decode_rate)
    spec = get_gpu(gpu)
    bench_data = read_bench(bench) if bench is not None else None
    path = Path(resolve_config_path(config))
    cfg = load_config(path)
    fp = config_footprint(path)
    return make_plan(cfg, fp, spec, gpus, num_classes(cfg), mfu=mfu, cohort=cohort, bench=bench_data,
                     decode_rate=decode_rate, margin=margin, config_name=Path(path).name,
                     votes=get_method(cfg.method).votes)


def _si(x: float, unit: str = "") -> str:
    for factor, prefix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.1f} {prefix}{unit}"
    return f"{x:.0f} {unit}".rstrip()


def _gib(x: float) -> str:
    return f"{x / 2**30:.2f} GiB" if x >= 2**30 else f"{x / 2**20:.1f} MiB"


def _hours(h: float) -> str:
    return f"{h * 3600:.1f} s" if h < 1 / 60 else f"{h * 60:.1f} min" if h < 1 else f"{h:.1f} h" if h < 48 else f"{h / 24:.1f} days"


def _static_parts(p: Plan) -> str:
    trained = [f for f in p.networks.values() if f.trained]
    parts = ["weights", "gradients", "Adam"] + (["EMA"] if any(f.ema for f in trained) else [])
    if any(not f.trained for f in p.networks.values()):
        parts.append("frozen weights")
    return ", ".join(parts)


def format_plan(p: Plan) -> str:
    """The plan as the table ``meddiff plan`` prints."""
    precision = p.precision if p.precision == p.score_precision else f"train {p.precision}, score {p.score_precision}"
    lines = [f"meddiff plan: {p.config} (method {p.method}) on {p.gpus} x {p.gpu}, {precision}, MFU {p.mfu:.2f}, "
             f"{100 * p.memory_margin:.0f} % of GPU memory kept free",
             "", "networks (full size, measured on the meta device; activations in the config's precision)",
             f"  {'network':16s} {'params':>10s} {'trainable':>10s} {'FLOPs/fwd':>11s} {'train act/img':>14s} "
             f"{'infer act/img':>14s} {'fwd/scored img':>15s}"]
    for name, f in p.networks.items():
        lines.append(f"  {name:16s} {_si(f.parameters):>10s} {_si(f.trainable_parameters):>10s} "
                     f"{_si(f.flops_per_forward):>11s} {_gib(f.train_activation_bytes_per_image):>14s} "
                     f"{_gib(f.inference_activation_bytes_per_image):>14s} {f.score_forwards:>15g}")
        if f.note:
            lines.append(f"    note: {f.note}")
    lines += ["", f"training: {p.train_steps} steps of {p.train_global_batch} images ({p.train_batch_per_gpu} per GPU)",
              f"  memory per GPU: {_gib(p.train_static_bytes)} {_static_parts(p)} + "
              f"{_gib(p.train_bytes_per_image)} per image -> at most {p.train_max_batch_per_gpu} images per GPU "
              f"({'fits' if p.train_fits else 'DOES NOT FIT'})",
              f"  {_si(p.train_flops_per_image, 'FLOP')} per image (forward + backward); "
              f"{_hours(p.train_hours)} on {p.gpus} GPU(s) = {p.train_gpu_hours:.1f} GPU-hours "
              f"({p.train_images_per_s:.3g} images/s per GPU)",
              "", f"scoring: {f'N = {p.n_draws}, ' if p.draws else ''}{p.classes} classes; forwards per image: "
              + ", ".join(f"{n} {v:g}" for n, v in p.score_forwards.items()),
              f"  {_si(p.score_flops_per_image, 'FLOP')} per image: {p.score_seconds_per_image:.3g} s per image on "
              f"one GPU ({p.score_images_per_s:.3g} images/s per GPU, {p.score_images_per_s * p.gpus:.3g} on "
              f"{p.gpus})",
              f"  memory: {_gib(p.score_weight_bytes)} weights + {_gib(p.score_bytes_per_image)} per image in flight "
              f"-> at most {p.score_max_images_in_flight} in flight (config: {p.score_images_in_flight})"]
    if p.cohort:
        lines.append(f"  cohort of {p.cohort} images: {p.cohort_gpu_hours:.3g} GPU-hours, {_hours(p.cohort_hours)} "
                     f"on {p.gpus} GPU(s)")
    if p.early_exit_note:
        lines += ["", f"early exit: {p.early_exit_note}"]
    if p.early_exit:
        lines.append(f"  {'rule':34s} {'NFE reduction':>13s} {'agreement':>10s} {'s/image':>9s}"
                     + (f" {'cohort GPU-h':>13s}" if p.cohort else ""))
        for r in p.early_exit:
            lines.append(f"  {r.rule:34s} {r.nfe_reduction:>12.2f}x {100 * r.agreement:>9.1f}% "
                         f"{r.seconds_per_image:>9.3g}" + (f" {r.cohort_gpu_hours:>13.3g}" if p.cohort else ""))
    cpus = (f"{p.cpus_per_actor} CPUs per actor at {p.decode_rate:g} images/s per core"
            if p.cpus_per_actor is not None else
            "CPUs per actor: give --decode-rate (images/s per core, measured by meddiff.bench.datapath)")
    lines += ["", f"ray: {p.actors_per_gpu} scoring actor(s) per GPU, {p.actors_per_gpu * p.gpus} in all, "
                  f"{p.actor_images_per_s:.3g} images/s each; {cpus}"]
    if p.cpus_per_worker is not None:
        lines.append(f"  training: {p.cpus_per_worker} CPUs per Ray Train worker decode its "
                     f"{p.train_images_per_s:.3g} images/s")
    if p.notes:
        lines += [""] + [f"note: {n}" for n in p.notes]
    return "\n".join(lines)
