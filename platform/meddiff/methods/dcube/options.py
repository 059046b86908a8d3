"""D-Cube's settings (``ExperimentConfig.method_options`` of a ``method: dcube`` run), checked strictly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from meddiff.config import ExperimentConfig, from_dict
from meddiff.errors import ConfigError

INPUTS = ("noised", "clean")
CONDITIONINGS = ("null_class", "per_class")
GRANULARITIES = ("block", "layer")
POOLS = ("mean", "mean_std")
SELECTIONS = ("non_gaussian", "gaussian", "all")


@dataclass(frozen=True)
class DCubeOptions:
    """Frozen diffusion model, which activations, how layers are chosen, the head and its losses.

    diffusion_checkpoint: a trained meddiff diffusion model (run folder, checkpoints/ folder or bundle; kind
        ``diffusion``). A relative path is resolved against ``output_dir`` (where meddiff runs live; Ray Train workers
        do not run in the launching directory), so ``demo-pneumonia`` with ``output_dir: runs`` is runs/demo-pneumonia.
    t: the fixed diffusion time of the features (paper Fig. 2: t = 100 of T = 1000 DDPM steps, i.e. 0.1).
    input: ``noised``: z_t = alpha_t x + sigma_t eps with eps seeded from (seed, image id) (``meddiff.diffusion.noise``);
        ``clean``: the clean x with the time input of t (paper Table VII's best setting, "x_0, t").
    conditioning: ``null_class``: the unconditional (null) class, one denoiser pass per image; ``per_class``: one pass per
        class, the features of every class concatenated (C passes per image).
    granularity: ``block``: the outputs of the down blocks, the mid block and the up blocks (DiT: every transformer
        block); ``layer``: every ResNet, attention, down- and up-sampler inside them.
    layers: restrict the candidate layers to these names (empty: every layer of the granularity).
    pool: spatial pooling of an activation [B, C, H, W] (DiT: tokens): ``mean`` -> [B, C]; ``mean_std`` -> [B, 2C].
    selection: the Gaussianity (Kolmogorov-Smirnov) layer selection. ``non_gaussian`` (the paper): keep the layers whose
        features are *not* Gaussian (KS p < alpha), the ones that keep the image's semantics rather than predict noise;
        ``gaussian``: the opposite (p >= alpha); ``all``: no selection.
    alpha: the KS significance level (paper: 0.05). top_k > 0 keeps the top_k best-ranked layers instead (ranked by the
        KS statistic). min_layers: when fewer layers pass the threshold, the best-ranked ones fill up to this number.
    ks_images: training images each KS test uses (the paper's batch: 256), a seeded subset of the training split.
    hidden: width of the head's hidden layer (0: a linear head); dropout: before the output layer.
    flip: random horizontal flips (p = 0.5) of the training images (paper step 2); the flipped images' features are
        extracted once beside the originals.
    consistency_weight: lambda_2 of the consistency loss (eq. 8, MSE between the logits of an image and its flip;
        paper 0.1). cycle_weight: lambda_1 of the cycle loss (eq. 7; paper 10 or 100), computed on the first
        ``cycle_batch`` images of each batch (it needs a denoiser forward and backward pass).
    contrastive_weight / contrastive_margin: the contrastive loss (eq. 4, margin 0.1 in the paper) on the head's
        embedding of the mid-block features (the mid block always feeds the head when it is on).
    extract_batch: images per denoiser pass during feature extraction.
    """

    diffusion_checkpoint: str = ""
    t: float = 0.1
    input: str = "noised"
    conditioning: str = "null_class"
    granularity: str = "block"
    layers: tuple[str, ...] = ()
    pool: str = "mean"
    selection: str = "non_gaussian"
    alpha: float = 0.05
    top_k: int = 0
    min_layers: int = 1
    ks_images: int = 256
    hidden: int = 256
    dropout: float = 0.1
    flip: bool = True
    consistency_weight: float = 0.0
    cycle_weight: float = 0.0
    cycle_batch: int = 16
    contrastive_weight: float = 0.0
    contrastive_margin: float = 0.1
    extract_batch: int = 64

    def __post_init__(self) -> None:
        _choice("input", self.input, INPUTS)
        _choice("conditioning", self.conditioning, CONDITIONINGS)
        _choice("granularity", self.granularity, GRANULARITIES)
        _choice("pool", self.pool, POOLS)
        _choice("selection", self.selection, SELECTIONS)
        _check(0.0 <= self.t <= 1.0, "t", "a diffusion time in [0, 1]", self.t)
        _check(0.0 < self.alpha < 1.0, "alpha", "a significance level in (0, 1)", self.alpha)
        _check(self.top_k >= 0, "top_k", "a non-negative integer", self.top_k)
        _check(self.min_layers >= 1, "min_layers", "a positive integer", self.min_layers)
        _check(self.ks_images >= 8, "ks_images", "at least 8 images", self.ks_images)
        _check(self.hidden >= 0, "hidden", "a non-negative width (0 = linear head)", self.hidden)
        _check(0.0 <= self.dropout < 1.0, "dropout", "a probability in [0, 1)", self.dropout)
        for name in ("consistency_weight", "cycle_weight", "contrastive_weight", "contrastive_margin"):
            _check(getattr(self, name) >= 0.0, name, "a non-negative number", getattr(self, name))
        _check(self.cycle_batch >= 1, "cycle_batch", "a positive integer", self.cycle_batch)
        _check(self.extract_batch >= 1, "extract_batch", "a positive integer", self.extract_batch)
        if self.contrastive_weight > 0 and self.hidden == 0:
            raise ConfigError("method_options.contrastive_weight: the contrastive loss acts on the head's embedding of "
                              "the mid-block features, which a linear head (hidden: 0) does not have; set hidden > 0")

    @property
    def needs_flips(self) -> bool:
        return self.flip or self.consistency_weight > 0


def parse_options(cfg: ExperimentConfig) -> DCubeOptions:
    opts = from_dict(DCubeOptions, cfg.method_options, "method_options")
    if not opts.diffusion_checkpoint:
        raise ConfigError(
            "method_options.diffusion_checkpoint: D-Cube needs a trained meddiff diffusion model to take features from; "
            "run `meddiff demo` (writes runs/demo-pneumonia) or `meddiff demo --dataset isic` (runs/demo-isic), or train "
            "one with `meddiff train --config demo-pneumonia`, and give its run folder here"
        )
    return opts


def frozen_checkpoint_path(opts: DCubeOptions, output_dir: str | Path) -> Path:
    """``diffusion_checkpoint`` as an absolute path (relative paths are relative to ``output_dir``)."""
    path = Path(opts.diffusion_checkpoint).expanduser()
    if not path.is_absolute():
        path = Path(output_dir).expanduser() / path
    return path.resolve()


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    _check(value in allowed, key, " or ".join(repr(a) for a in allowed), value)


def _check(ok: bool, key: str, expected: str, got) -> None:
    if not ok:
        raise ConfigError(f"method_options.{key}: expected {expected}, got {got!r}")
