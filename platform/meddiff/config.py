"""Typed, frozen experiment configuration.

A config is loaded from YAML, checked strictly (an unknown key or a value of the wrong type is an error that names the
section and the key), and saved as JSON beside every artefact it produced, so a checkpoint or a results set always carries
the exact settings that made it.

Source- and model-specific settings live in ``params`` mappings; the registry entry that the name picks validates them
against its own frozen dataclass (see ``meddiff.data.sources`` and ``meddiff.models``).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from meddiff.errors import ConfigError
from meddiff.rules import STOPPING_RULES, scoring_rules

SEED_MAX = 2**32 - 1  # seeds feed numpy / torch generators; larger ones are not portable


def _check_seed(value: int, key: str) -> None:
    _check(isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= SEED_MAX, key,
           f"an integer seed in 0..{SEED_MAX}", value)


ASPECTS = ("pad", "crop", "stretch")  # data.aspect, applied by meddiff.data.decode.ImageDecoder
# The PIL plugins any meddiff code may open an image file with (besides DICOM, read by meddiff.data.dicom): passed as
# Image.open(..., formats=IMAGE_FORMATS) so PIL never tries another plugin (EPS would run Ghostscript).
IMAGE_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP")
DEFAULT_MAX_PIXELS = 36_000_000  # data.max_pixels: a 4096 x 5625 mammogram fits, an 8192 x 8192 image does not


@dataclass(frozen=True)
class DataConfig:
    """Which images, at which size.

    source: registry name of the data source (``medmnist``, ``image_csv``, ``chexpert``, ``isic_challenge``, ``phantom``).
    params: the source's own settings (paths, column names); checked by the source.
    image_size: side of the square float image the decoder produces (pixels, before the wavelet transform).
    channels: 1 (grayscale) or 3 (RGB); images are converted, never guessed.
    balance: undersample the larger classes to the smallest one (seeded), as the paper does for CheXpert and ISIC;
        whole groups (patients) are kept or dropped when the source has groups (``data.manifest.balance_groups``).
    split_seed: seed of balancing and of the stratified split made for sources that have none.
    split_fractions: train/val/test fractions of that split.
    cv_folds: 0 (no cross-validation) or k >= 2: every row (official splits are pooled) gets a stratified group fold
        0..k-1 (``meddiff cv``); fold ``cv_fold`` is the test split, a stratified group part of the others (the
        val fraction of ``split_fractions`` relative to train + val) is val, the rest train.
    cv_fold: the fold held out as test when ``cv_folds`` is set.
    derive: new metadata column -> rule deriving it from a manifest column or a metadata column
        (``{from: id, regex: 'ISIC_(\\d+)', bins: [...], labels: [...]}`` or ``{from: view, map: {AP: frontal}}``;
        checked by ``meddiff.data.derive``).
    leakage_check: what ``build_manifest`` checks across splits (``meddiff.data.leakage``): ``full`` (groups, exact
        duplicates, near duplicates), ``exact`` (groups, exact duplicates), ``groups`` or ``off``.
    aspect: how a non-square image becomes image_size x image_size (``meddiff.data.decode``): ``pad`` (letterbox on
        black, centred), ``crop`` (centred square) or ``stretch`` (resize both sides; what bundles written before this
        key existed use, see ``bundle_data_config``).
    max_pixels: largest width x height an image file may have; checked from the header before decoding (a
        decompression bomb is refused unread). 36 million admits a 4096 x 5625 mammogram and refuses 8192 x 8192.
    """

    source: str = "phantom"
    params: Mapping[str, Any] = field(default_factory=dict)
    image_size: int = 32
    channels: int = 1
    balance: bool = False
    split_seed: int = 0
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    cv_folds: int = 0
    cv_fold: int = 0
    derive: Mapping[str, Any] = field(default_factory=dict)
    leakage_check: str = "full"
    aspect: str = "pad"
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        _check(self.image_size >= 4 and self.image_size % 2 == 0, "data.image_size", "an even integer >= 4", self.image_size)
        _check(self.channels in (1, 3), "data.channels", "1 (grayscale) or 3 (RGB)", self.channels)
        _check(
            len(self.split_fractions) == 3 and abs(sum(self.split_fractions) - 1.0) < 1e-6 and min(self.split_fractions) >= 0,
            "data.split_fractions", "three non-negative fractions summing to 1", self.split_fractions,
        )
        _check(self.cv_folds == 0 or self.cv_folds >= 2, "data.cv_folds", "0 (off) or an integer >= 2", self.cv_folds)
        _check(0 <= self.cv_fold < max(self.cv_folds, 1), "data.cv_fold", f"a fold in 0..{max(self.cv_folds, 1) - 1}",
               self.cv_fold)
        _check(self.leakage_check in ("full", "exact", "groups", "off"), "data.leakage_check",
               "one of full, exact, groups, off", self.leakage_check)
        _check_seed(self.split_seed, "data.split_seed")
        _check(self.aspect in ASPECTS, "data.aspect", f"one of {', '.join(ASPECTS)}", self.aspect)
        _check(isinstance(self.max_pixels, int) and not isinstance(self.max_pixels, bool) and self.max_pixels >= 1,
               "data.max_pixels", "a positive integer (width x height)", self.max_pixels)


@dataclass(frozen=True)
class ModelConfig:
    """Denoiser architecture: ``name`` picks the registry entry, ``params`` are its typed settings."""

    name: str = "unet"
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DiffusionConfig:
    """Forward process, parameterisation and loss (Favero et al. 2025, section 2 and Appendix B; ``meddiff.diffusion``).

    logsnr_min/max: range of the unshifted cosine schedule's log-SNR (paper: -15, 15).
    shift_base: the "base" of the shifted cosine schedule (simple diffusion: 64).
    shift_size: image side used in the shift 2 log(base / d); None uses the pixel image side (the official code uses the full
        image side, 256, even though the denoiser sees the 128 x 128 wavelet image).
    wavelet: run the denoiser on the single-stage Haar DWT (4C x H/2 x W/2) instead of pixels.
    time_input: what the denoiser receives as its time: ``logsnr`` (official code) or ``t`` (scaled by 1000).
    loss_weight: ``min_snr`` (Hang et al., on the v-loss: min(SNR, gamma) / (SNR + 1)) or ``none`` (plain v-MSE).
    cfg_dropout: probability that a training sample gets the null class (classifier-free guidance).
    """

    logsnr_min: float = -15.0
    logsnr_max: float = 15.0
    shift_base: int = 64
    shift_size: int | None = None
    wavelet: bool = False
    time_input: str = "logsnr"
    loss_weight: str = "min_snr"
    min_snr_gamma: float = 5.0
    cfg_dropout: float = 0.15

    def __post_init__(self) -> None:
        _check(self.logsnr_min < self.logsnr_max, "diffusion.logsnr_min", "less than logsnr_max", self.logsnr_min)
        _check(self.time_input in ("logsnr", "t"), "diffusion.time_input", "'logsnr' or 't'", self.time_input)
        _check(self.loss_weight in ("min_snr", "none"), "diffusion.loss_weight", "'min_snr' or 'none'", self.loss_weight)
        _check(0.0 <= self.cfg_dropout < 1.0, "diffusion.cfg_dropout", "a probability in [0, 1)", self.cfg_dropout)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation (paper Appendix B: Adam 1e-4, 250 warm-up steps, clip 1.0, EMA 0.999 / warm-up 50 / every 5 steps).

    preload_max_gb: decode the whole training split into memory when it fits, else stream batches from the files with
        ``num_workers`` DataLoader worker processes.
    grad_clip: max global gradient norm (0 = no clipping).
    augment: baselines only: the paper's augmentations (rotation +-30 deg, h/v flips p = 0.5, Gaussian blur k = 5,
        sigma 0.1-2). Diffusion models train without augmentation, as in the paper.
    num_threads: torch intra-op threads (0 = one per core).
    """

    steps: int = 1000
    batch_size: int = 128
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 250
    grad_clip: float = 1.0
    ema_beta: float = 0.999
    ema_warmup: int = 50
    ema_every: int = 5
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 25
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    num_threads: int = 0
    num_workers: int = 2
    preload_max_gb: float = 4.0
    augment: bool = True

    def __post_init__(self) -> None:
        _check(self.steps > 0, "train.steps", "a positive integer", self.steps)
        _check(self.batch_size > 0, "train.batch_size", "a positive integer", self.batch_size)
        _check(_finite(self.lr) and self.lr > 0, "train.lr", "a finite learning rate > 0", self.lr)
        _check(_finite(self.weight_decay) and self.weight_decay >= 0, "train.weight_decay", "a finite value >= 0",
               self.weight_decay)
        _check(_finite(self.grad_clip) and self.grad_clip >= 0, "train.grad_clip", "a finite norm >= 0 (0 = off)",
               self.grad_clip)
        _check(_finite(self.ema_beta) and 0.0 <= self.ema_beta < 1.0, "train.ema_beta", "a decay in [0, 1)",
               self.ema_beta)
        _check(_finite(self.preload_max_gb) and self.preload_max_gb >= 0, "train.preload_max_gb",
               "a finite size >= 0", self.preload_max_gb)
        _check_seed(self.seed, "train.seed")
        _check(self.precision in ("auto", "fp32", "bf16"), "train.precision", "'auto', 'fp32' or 'bf16'", self.precision)


@dataclass(frozen=True)
class ScoreConfig:
    """How the diffusion classifier scores an image (Favero et al. 2025, section 2.2; ``meddiff.diffusion.engine``).

    n_draws: number of (eps, t) pairs per image, shared by every class (paper 501, official code 51; odd avoids binary ties).
    t_min/t_max: the draws' t is uniform on [t_min, t_max] (the official code: [0, 1]).
    error_target: what the per-draw error compares: ``eps`` (official code), ``x`` (paper eq. 4) or ``v``.
        Votes are identical for eps and x (the two differ by a per-draw factor shared by all classes); averages are not.
    rule: the rule whose prediction fills the ``pred`` column: ``vote`` (the paper's) or ``average`` (Li et al.);
        the scoring rules of ``meddiff.rules.CLASSIFICATION_RULES``.
    seed: run seed; every image's noise is seeded from (seed, image id).
    store_draws: keep the per-draw errors and t in the results (needed for the N and t ablations).
    shard_size: images per results file; a shard is the unit of work, of retry and of resume (exactly once).
    limit: score only the first ``limit`` images of the split (0 = all).
    batch_size: images in flight in the continuous-batching engine (slots refilled as images stop).
    stopping: ``none`` (all N draws), ``exact`` (stop when the vote leader cannot be caught: identical predictions),
        ``wilson``, ``wilson_per_look``, ``hoeffding`` or ``mixture`` (sequential tests at risk ``delta``): the names
        and guarantees are in ``meddiff.rules.STOPPING_RULES``, the tests in ``meddiff.diffusion.stopping``.
    chunk_draws: draws added per image between stopping checks.
    max_batch: denoiser inputs per forward pass (0: 256 on CPU, 2048 on GPU).
    channels_last / compile: CUDA speed-ups (channels_last defaults on for CUDA; torch.compile is opt-in).
    referral: a referral.json of ``meddiff calibrate`` ("" = none): every ok row gets decision accept/refer at its
        threshold, with its alpha and delta (``meddiff.scoring.referral``); it must name this checkpoint's model_id.
        The ``futility`` stopping rule needs it: it also stops an image, as "refer", once it is settled inside the band
        this threshold refers. decision_z (futility only, 0 = off): a leader stop also waits until the vote entropy
        is that many standard errors from the threshold, trading draws for accept / refer decisions closer to the
        full-N vote's (``meddiff.diffusion.stopping``); the guarantee is unchanged.
    t_draws / strata / antithetic: how an image's draws are laid out (``meddiff.diffusion.noise.DrawScheme``):
        ``uniform`` t (the paper's) or ``stratified`` over blocks of ``strata`` draws; ``antithetic`` pairs every
        noise with its negation at the same t. A sequential stopping rule with stratified t looks on block boundaries
        (chunk_draws a multiple of strata); antithetic pairs are dependent, so they take ``none`` or ``exact`` only.
    """

    n_draws: int = 51
    batch_size: int = 32
    t_min: float = 0.0
    t_max: float = 1.0
    error_target: str = "eps"
    rule: str = "vote"
    seed: int = 0
    split: str = "test"
    store_draws: bool = True
    device: str = "auto"
    precision: str = "auto"
    num_threads: int = 0
    limit: int = 0
    shard_size: int = 256
    stopping: str = "none"
    delta: float = 0.01
    chunk_draws: int = 8
    max_batch: int = 0
    channels_last: bool | None = None
    compile: bool = False
    referral: str = ""
    t_draws: str = "uniform"
    strata: int = 8
    antithetic: bool = False
    decision_z: float = 0.0

    def __post_init__(self) -> None:
        _check(self.shard_size > 0, "score.shard_size", "a positive integer", self.shard_size)
        _check(self.stopping in STOPPING_RULES, "score.stopping", f"one of {tuple(STOPPING_RULES)}", self.stopping)
        _check(self.t_draws in ("uniform", "stratified"), "score.t_draws", "'uniform' or 'stratified'", self.t_draws)
        _check(self.strata > 0, "score.strata", "a positive integer", self.strata)
        _check(0.0 <= self.decision_z <= 10.0, "score.decision_z", "a number of standard errors in [0, 10]",
               self.decision_z)
        sequential = self.stopping not in ("none", "exact")
        if sequential and self.t_draws == "stratified":
            _check(self.chunk_draws % self.strata == 0, "score.chunk_draws",
                   f"a multiple of score.strata ({self.strata}) with stratified t and a sequential stopping rule "
                   "(its guarantee holds on block boundaries)", self.chunk_draws)
        if sequential and self.antithetic:
            raise ConfigError(f"score.antithetic: antithetic pairs are dependent, so no anytime-valid guarantee covers "
                              f"score.stopping {self.stopping!r} on them; use stopping none or exact with antithetic "
                              "draws")
        if STOPPING_RULES[self.stopping].uses_referral and not self.referral:
            raise ConfigError(f"score.stopping: {self.stopping!r} also stops on the referral decision, so it needs "
                              "score.referral (a referral.json of `meddiff calibrate`, e.g. --referral referral.json)")
        _check(0.0 < self.delta < 1.0, "score.delta", "a risk in (0, 1)", self.delta)
        _check(self.chunk_draws > 0, "score.chunk_draws", "a positive integer", self.chunk_draws)
        _check(self.n_draws > 0, "score.n_draws", "a positive integer", self.n_draws)
        _check(0.0 <= self.t_min < self.t_max <= 1.0, "score.t_min/t_max", "0 <= t_min < t_max <= 1", (self.t_min, self.t_max))
        _check(self.error_target in ("eps", "x", "v"), "score.error_target", "'eps', 'x' or 'v'", self.error_target)
        _check(self.rule in scoring_rules(), "score.rule", f"one of {scoring_rules()}", self.rule)
        _check(self.split in ("train", "val", "test", "all"), "score.split", "train, val, test or all", self.split)
        _check_seed(self.seed, "score.seed")


@dataclass(frozen=True)
class RayConfig:
    """How a run uses Ray (training with Ray Train, scoring with Ray Data actors).

    address: "" starts a local embedded cluster (or joins one this process already started); "auto" joins the cluster
        this machine belongs to; "ray://host:10001" or "host:6379" joins a remote one.
    num_workers: Ray Train workers (data parallel, DDP: nccl on GPU, gloo on CPU); 0 runs the loop in this process.
    use_gpu: give each Ray Train worker / scoring actor GPUs (null: when the cluster has GPUs).
    cpus_per_worker / gpus_per_worker: resources of each training worker.
    max_failures: training restarts after worker or node failures, resuming from the newest checkpoint.
    actors / cpus_per_actor / gpus_per_actor: the scoring actor pool (each actor loads the checkpoint once).
    threads_per_actor: torch threads in a CPU actor (0: cpus_per_actor rounded, at least 1).
    actor_resources: custom Ray resources each actor needs (e.g. to pin actors to a node group).
    actor_start_timeout_s: how long a scoring or explain pool waits for all ``actors`` to be up (each holding its loaded
        model) before the first shard is handed out; a cluster that cannot start them in time (too few free CPUs/GPUs,
        an autoscaler that does not deliver) is an error that names the request, not a silently smaller pool.
    """

    address: str = ""
    num_workers: int = 0
    use_gpu: bool | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0
    max_failures: int = 2
    actors: int = 1
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 1.0
    threads_per_actor: int = 0
    actor_resources: Mapping[str, float] = field(default_factory=dict)
    actor_start_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        _check(self.num_workers >= 0, "ray.num_workers", "a non-negative integer", self.num_workers)
        _check(self.actors >= 1, "ray.actors", "a positive integer", self.actors)
        _check(self.actor_start_timeout_s >= 1, "ray.actor_start_timeout_s", "at least 1 second",
               self.actor_start_timeout_s)


@dataclass(frozen=True)
class ExplainConfig:
    """Counterfactual explanations of scored images (``meddiff explain``; Favero et al. 2025, section 4.3).

    t_start: how far each image is noised before it is denoised under every class (paper: 0.5 chest X-ray, 0.3 skin).
    steps: ancestral sampling steps from t_start to 0 (paper figures: 256; the authors' script: 50).
    guidance: classifier-free guidance scale w in (1 + w) x_hat(z, c) - w x_hat(z, null) (paper 7.5; script 4.5).
    select: which scored images to explain: ``uncertain:k`` (k most uncertain), ``certain:k`` (k least uncertain),
        ``extremes:k`` (k of each), ``errors`` (all misclassified), ``errors:k``, ``ids:a,b,...``, ``all``.
    seed: run seed; an image's noise depends on (seed, image id) only.
    batch_size: images per sampler call; shard_size: images per index file (the unit of work, retry and resume).
    """

    t_start: float = 0.5
    steps: int = 256
    guidance: float = 7.5
    select: str = "extremes:8"
    seed: int = 0
    batch_size: int = 8
    shard_size: int = 8
    device: str = "auto"
    num_threads: int = 0

    def __post_init__(self) -> None:
        _check(0.0 <= self.t_start <= 1.0, "explain.t_start", "a time in [0, 1]", self.t_start)
        _check(self.steps > 0, "explain.steps", "a positive integer", self.steps)
        _check(self.guidance >= 0.0, "explain.guidance", "a non-negative guidance scale", self.guidance)
        _check(self.batch_size > 0, "explain.batch_size", "a positive integer", self.batch_size)
        _check(self.shard_size > 0, "explain.shard_size", "a positive integer", self.shard_size)
        _check_seed(self.seed, "explain.seed")


@dataclass(frozen=True)
class TrackingConfig:
    """Experiment tracking with MLflow (``meddiff.tracking``): training, scoring and report runs log their settings,
    metrics, loss curve, bundle and report to an MLflow tracking store.

    enabled: log to MLflow (``meddiff demo`` turns it on; off, nothing is imported or written).
    uri: the tracking URI: "" = a local SQLite store ``<output_dir>/mlflow.db`` with artifacts in
        ``<output_dir>/mlartifacts``; else any MLflow URI (``sqlite:///path.db``, ``http://host:5000``,
        ``databricks``). Only a remote URI makes network calls.
    experiment: the MLflow experiment ("" = the config's name).
    log_bundle: upload the final bundle (weights included) as artifacts; false logs its metadata.json only.
    parent_run_id: an MLflow run to nest this config's runs under ("" = top level; ``meddiff demo`` sets it).
    """

    enabled: bool = False
    uri: str = ""
    experiment: str = ""
    log_bundle: bool = True
    parent_run_id: str = ""


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything one run needs; saved as config.json beside its checkpoints and results.

    method: a name registered in ``meddiff.method_registry``: ``diffusion`` (a conditional diffusion model used as a
        classifier), ``baseline`` (a discriminative timm classifier trained with cross-entropy and the paper's
        augmentations), and the other diffusion-based classifiers registered there.
    method_options: the method's own settings, validated by its module.
    """

    name: str = "experiment"
    output_dir: str = "runs"
    method: str = "diffusion"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    method_options: Mapping[str, Any] = field(default_factory=dict)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        from meddiff.method_registry import discover

        methods = discover()
        _check(self.method in methods, "method", f"one of {sorted(methods)}", self.method)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check(ok: bool, key: str, expected: str, got: Any) -> None:
    if not ok:
        raise ConfigError(f"{key}: expected {expected}, got {got!r}")


def from_dict(cls: type, data: Mapping[str, Any] | None, where: str = "") -> Any:
    """Build the frozen dataclass ``cls`` from a plain mapping, strictly.

    Unknown keys and values of the wrong type raise ConfigError naming ``where.key`` and the allowed keys.
    """
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where or cls.__name__}: unknown key(s) {unknown}; allowed keys are {sorted(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        kwargs[name] = _coerce(hints[name], value, key)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a missing required field
        raise ConfigError(f"{where or cls.__name__}: {exc}") from None


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: {value!r} does not match {tp}")
    if tp is Any:
        return value
    if isinstance(value, (datetime.date, datetime.datetime)):
        raise ConfigError(f"{key}: YAML read {value!r} as a date; expected {getattr(tp, '__name__', tp)}: quote it "
                          f"('{value}') if you mean text")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value))) if args else tuple(value)
    if origin in (dict, collections.abc.Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _looks_numeric(value):
            raise ConfigError(f"{key}: expected a number, got the text {value!r}: YAML 1.1 reads exponents without a "
                              f"dot as text; write {_with_dot(value)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r} (NaN and infinity are refused)")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _with_dot(text: str) -> str:
    """'1e-4' -> '1.0e-4' (what YAML 1.1 reads as a float)."""
    mantissa, _, exponent = text.strip().lower().partition("e")
    if exponent and "." not in mantissa:
        mantissa += ".0"
    return f"{mantissa}e{exponent}" if exponent else mantissa


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain JSON-able dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=list))


PRESETS_DIR = Path(__file__).resolve().parent / "presets"


def data_root() -> Path:
    """Where the shared real data lives: $MEDDIFF_DATA, else the first existing ../shared/data (from the working
    directory, then from the repository root). Used to expand ``${MEDDIFF_DATA}`` in config strings."""
    env = os.environ.get("MEDDIFF_DATA")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    for candidate in (Path.cwd().parent / "shared" / "data", repo.parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate.resolve()
    return repo.parent / "shared" / "data"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A YAML path, or the name of a built-in preset (``meddiff presets`` lists them)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    preset = PRESETS_DIR / f"{name_or_path}.yaml"
    if preset.is_file():
        return preset
    raise ConfigError(f"config {name_or_path!r}: no such file, and not a preset (presets: {', '.join(preset_names())})")


def _expand(value: Any) -> Any:
    if isinstance(value, str) and "${MEDDIFF_DATA}" in value:
        return value.replace("${MEDDIFF_DATA}", str(data_root()))
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v) for v in value]
    return value


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key repeated in one mapping (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader reports it
                break
            line = key_node.start_mark.line + 1
            if first is not None:
                raise ConfigError(f"{key_node.start_mark.name}: duplicate key {key!r} at line {first} and line {line}; "
                                  "a key may appear once per section (YAML would silently keep the last)")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, where: str = "<yaml>") -> Any:
    """YAML text as plain Python (safe types only); a repeated key is a ConfigError naming it and both lines;
    invalid YAML a ConfigError naming ``where``. The one YAML reader of configs and overrides."""
    try:
        loader = _UniqueKeyLoader(text)
        loader.name = where
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}") from None


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """Read an ExperimentConfig from YAML (or JSON) or a preset name, applying dotted ``overrides`` such as
    {"train.steps": 10}. ``${MEDDIFF_DATA}`` in strings becomes ``data_root()``."""
    path = resolve_config_path(path)
    raw = load_yaml(path.read_text(), str(path)) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (data, model, diffusion, train, score)")
    try:
        _reject_dates(raw, "")
        raw = _expand(apply_overrides(raw, overrides or {}))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    try:
        return from_dict(ExperimentConfig, raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _reject_dates(value: Any, key: str) -> None:
    """ConfigError naming the first value YAML read as a date (``2024-01-31`` unquoted): no setting takes a date, and
    a date would silently become other text or break saving the config as JSON."""
    if isinstance(value, (datetime.date, datetime.datetime)):
        raise ConfigError(f"{key or 'value'}: YAML read {value!r} as a date; no setting takes a date: quote it "
                          f"('{value}') if you mean text")
    if isinstance(value, dict):
        for k, v in value.items():
            _reject_dates(k, f"{key}.{k}" if key else str(k))
            _reject_dates(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _reject_dates(v, f"{key}[{i}]")


def apply_overrides(raw: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Set dotted keys ("score.n_draws") in a nested plain dict (a copy)."""
    out = json.loads(json.dumps(raw))
    for dotted, value in overrides.items():
        node = out
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {dotted}: {part} is not a section")
        node[parts[-1]] = value
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """Parse a command-line override ``key.sub=value`` (the value is read as YAML: 10, 0.5, true, [1, 2], text)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.sub=value, e.g. train.steps=200")
    key, value = text.split("=", 1)
    parsed = load_yaml(value, f"override {text!r}")
    _reject_dates(parsed, key.strip())
    return key.strip(), parsed


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    # no sort_keys: mapping order carries meaning (image_csv label_names lists the classes in class order)
    Path(path).write_text(json.dumps(to_dict(cfg), indent=2))


def config_from_json(data: Mapping[str, Any]) -> ExperimentConfig:
    """A saved config (a bundle's ``metadata.json``), with ``data.aspect`` defaulting to ``stretch`` when missing:
    bundles written before the key existed were trained on stretched images and keep being scored that way."""
    data = dict(data)
    if isinstance(data.get("data"), Mapping):
        data["data"] = _with_old_aspect(data["data"])
    return from_dict(ExperimentConfig, data)


def bundle_data_config(data: Mapping[str, Any]) -> DataConfig:
    """The ``data`` section of a saved config as a DataConfig, a missing ``aspect`` read as ``stretch``."""
    return from_dict(DataConfig, _with_old_aspect(data), "data")


def _with_old_aspect(data: Mapping[str, Any]) -> dict[str, Any]:
    return {**data, "aspect": data.get("aspect", "stretch")}
