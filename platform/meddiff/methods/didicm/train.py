"""DiDiCM-style classifier: a discrete diffusion over the class label conditioned on the image (Belhasin et al.,
"Advancing Image Classification with Discrete Diffusion Classification Modeling").

  1. Forward process: the uniform label kernel of ``meddiff.methods.didicm.process`` over a K-step chain (``method_options.steps``;
     the paper's uniform rate matrix with the log-linear noise schedule, as its code).
  2. Network: a small DiDiRN (``meddiff.methods.didicm.net``): a ResNet with its blocks conditioned on the step and the noisy label.
  3. Training: per image k ~ U{1..K}, c_k ~ q(c_k | y), loss = CE(DiDiRN(x, c_k, k / K), y); the paper's
     augmentations (``train.augment``, as the baselines: DiDiCM trains with a standard classifier recipe, timm's,
     which also keeps an EMA of the weights: bundles hold the EMA of ``train.ema_*`` once it has started).
  4. Inference: the reverse process from a uniform label gives p(c | x), on class probabilities (DiDiCM-CP, one
     network evaluation per reverse step) or on S sampled label chains (DiDiCM-CL, counts / S), by
     ``method_options.inference``. pred = argmax, prob = the final distribution, uncertainty = its normalised entropy,
     nfe = network evaluations per image. The vote columns stay null: the label chains are not the (eps, t) noise
     draws the vote-vs-average ablations compare, so their counts go into ``prob`` (counts / S).

Where this simplifies the paper: a discrete K-step chain with a clean-label (x0) network trained by cross-entropy
instead of a continuous-time concrete-score network trained by score entropy (the two are related by Bayes, see
``meddiff.methods.didicm.process``); CP picks its one evaluated label by ``max`` or ``min`` (the code's deterministic rules, not
``random``); CL evaluates each distinct (image, label) pair of a step once, so its nfe is at most min(S, C) per step
rather than S; a CPU-sized DiDiRN.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from meddiff.config import ExperimentConfig, ModelConfig, from_dict, to_dict
from meddiff.diffusion.ema import EMA
from meddiff.diffusion.noise import draw_seed, image_seed
from meddiff.errors import CheckpointError, ConfigError
from meddiff.methods.didicm import process as P
from meddiff.methods.didicm.net import DiDiRN, DiDiRNConfig
from meddiff.train.loop import evaluate_probs, run_loop, seeded_init, setup_run, val_batches
from meddiff.train.augment import PAPER_AUGMENTATION
from meddiff.train.batches import step_generator
from meddiff.bundle import load_weights, read_bundle
from meddiff.train.context import LocalContext

KIND = "didicm"
MODEL_NAME = "didirn"
AUGMENT_STREAM = 2  # the baseline loop's augmentation stream (0: label noise, 1: batch indices)


@dataclass(frozen=True)
class DiDiCMOptions:
    """``method_options`` of a DiDiCM run.

    steps: K, the length of the label chain (the paper: 8 reverse steps).
    noise_eps: the kernel keeps the label with weight eps at step K (log-linear schedule's eps).
    inference: ``probabilities`` (DiDiCM-CP) or ``labels`` (DiDiCM-CL): which mode the predictor scores with.
    inference_steps: reverse steps at inference (0 = K; fewer jump over evenly spaced steps of the chain).
    chains: S, the label chains per image in ``labels`` mode.
    label_rule: the label CP evaluates at each step: ``max`` (most probable) or ``min`` (least probable).
    """

    steps: int = 8
    noise_eps: float = 1e-3
    inference: str = "probabilities"
    inference_steps: int = 0
    chains: int = 32
    label_rule: str = "max"

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"method_options.steps: expected a positive chain length K, got {self.steps!r}")
        if not 0.0 < self.noise_eps < 1.0:
            raise ConfigError(f"method_options.noise_eps: expected a value in (0, 1), got {self.noise_eps!r}")
        if self.inference not in ("probabilities", "labels"):
            raise ConfigError(f"method_options.inference: expected 'probabilities' or 'labels', got {self.inference!r}")
        if not 0 <= self.inference_steps <= self.steps:
            raise ConfigError(f"method_options.inference_steps: expected 0..steps ({self.steps}), got "
                              f"{self.inference_steps!r}")
        if self.chains < 1:
            raise ConfigError(f"method_options.chains: expected a positive number of chains, got {self.chains!r}")
        if self.label_rule not in ("max", "min"):
            raise ConfigError(f"method_options.label_rule: expected 'max' or 'min', got {self.label_rule!r}")

    @property
    def reverse_steps(self) -> int:
        return self.inference_steps or self.steps


def parse_options(method_options: Any) -> DiDiCMOptions:
    return from_dict(DiDiCMOptions, method_options, "method_options")


@dataclass
class DiDiCMModel:
    """network: (images [B, channels, S, S] in [-1, 1], noisy labels [B], t [B]) -> clean-label logits [B, C]."""

    network: nn.Module
    model_cfg: ModelConfig
    options: DiDiCMOptions
    class_names: tuple[str, ...]
    image_size: int
    channels: int
    model_id: str = "untrained"
    metadata: dict[str, Any] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def metadata_fields(self) -> dict[str, Any]:
        return {"kind": KIND, "model": to_dict(self.model_cfg), "method_options": to_dict(self.options),
                "class_names": list(self.class_names), "image_size": self.image_size, "channels": self.channels}

    def x0_fn(self, images: torch.Tensor, network: nn.Module | None = None, max_batch: int = 0):
        """The reverse processes' x0_fn over a batch of images: (rows, labels, k) -> pi(c_0 | x_rows, labels, k)."""
        net = network or self.network
        k_total = self.options.steps

        def fn(rows: torch.Tensor, labels: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            chunk = max_batch or len(rows)
            return torch.cat([
                torch.softmax(net(images[rows[i:i + chunk]], labels[i:i + chunk], k[i:i + chunk] / k_total).float(),
                              dim=-1)
                for i in range(0, len(rows), chunk)
            ])

        return fn

    @torch.no_grad()
    def predict_probabilities(self, images: torch.Tensor, network: nn.Module | None = None,
                              max_batch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """DiDiCM-CP: (p(c | x) [B, C] float32, nfe [B])."""
        o = self.options
        prob, nfe, _ = P.reverse_probabilities(self.x0_fn(images, network, max_batch), images.shape[0],
                                               self.num_classes, o.steps, o.reverse_steps, o.noise_eps, o.label_rule,
                                               images.device)
        return prob.float(), nfe

    @torch.no_grad()
    def predict_labels(self, images: torch.Tensor, ids: Sequence[str], seed: int, network: nn.Module | None = None,
                       max_batch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """DiDiCM-CL: (counts [B, C] of the S chains' final labels, nfe [B]); chains seeded by (seed, image id)."""
        o = self.options
        n_cols = len(P.step_grid(o.steps, o.reverse_steps))
        uniforms = chain_uniforms([image_seed(seed, str(i)) for i in ids], n_cols, o.chains).to(images.device)
        return P.reverse_labels(self.x0_fn(images, network, max_batch), uniforms, self.num_classes, o.steps,
                                o.reverse_steps, o.noise_eps)


def chain_uniforms(img_seeds: Sequence[int], columns: int, chains: int) -> torch.Tensor:
    """[B, columns, chains] uniforms, image b's from a CPU generator seeded by its seed only (batch-independent)."""
    gen = torch.Generator(device="cpu")
    out = torch.empty(len(img_seeds), columns, chains, dtype=torch.float64)
    for b, s in enumerate(img_seeds):
        gen.manual_seed(draw_seed(int(s), 0))
        out[b] = torch.rand(columns, chains, generator=gen, dtype=torch.float64)
    return out


def build_didicm_model(model_cfg: ModelConfig, options: DiDiCMOptions, class_names: tuple[str, ...], image_size: int,
                       channels: int) -> DiDiCMModel:
    if model_cfg.name != MODEL_NAME:
        raise ConfigError(f"model.name: DiDiCM uses its conditioned ResNet; use {MODEL_NAME!r}, got {model_cfg.name!r}")
    settings = from_dict(DiDiRNConfig, model_cfg.params, "model.params")
    network = DiDiRN(settings, channels, len(class_names))
    return DiDiCMModel(network, model_cfg, options, tuple(class_names), image_size, channels)


def load_didicm_model(path, device: torch.device | str = "cpu") -> DiDiCMModel:
    """Rebuild the network from a bundle's metadata.json and load its weights, in eval mode."""
    bundle = read_bundle(path)
    meta = bundle.metadata
    if meta.get("kind") != KIND:
        raise CheckpointError(f"{bundle.path}: is a {meta.get('kind')!r} checkpoint, not a {KIND} model")
    model = build_didicm_model(from_dict(ModelConfig, meta["model"], "metadata.model"),
                               parse_options(meta.get("method_options", {})), tuple(meta["class_names"]),
                               int(meta["image_size"]), int(meta["channels"]))
    load_weights(bundle, model.network)
    model.network.to(device).eval().requires_grad_(False)
    model.model_id = bundle.model_id
    model.metadata = meta
    return model


def label_diffusion_loss(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, options: DiDiCMOptions,
                         num_classes: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Cross-entropy of the clean label from a noised one at a random step (module docstring, step 3).

    images [B, C, H, W], labels [B]; generator seeds k and the label noise (on the images' device).
    """
    b = labels.shape[0]
    k = torch.randint(1, options.steps + 1, (b,), generator=generator, device=labels.device)
    abar = P.alpha_bar(k.cpu(), options.steps, options.noise_eps).to(labels.device)
    noisy = P.q_sample(labels, abar, num_classes, generator)
    logits = net(images, noisy, k.float() / options.steps).float()
    loss = F.cross_entropy(logits, labels)
    return {"loss": loss, "accuracy": (logits.argmax(dim=1) == labels).float().mean(),
            "kept": (noisy == labels).float().mean()}


def train_didicm(cfg: ExperimentConfig, context: LocalContext | None = None) -> Path | None:
    """Train (or resume) the DiDiCM run ``cfg.output_dir/cfg.name``; returns the final bundle (rank 0)."""
    options = parse_options(cfg.method_options)
    setup = setup_run(cfg, context, KIND)
    tc, ctx, device = cfg.train, setup.ctx, setup.device
    with seeded_init(tc.seed):
        model = build_didicm_model(cfg.model, options, setup.manifest.class_names, cfg.data.image_size,
                                   cfg.data.channels)
    network = model.network.to(device)
    if device.type == "cuda":
        network = network.to(memory_format=torch.channels_last)
    if ctx.is_main:
        ctx.log(f"[train] label chain of K = {options.steps} steps (uniform kernel), augmentation "
                f"{'on' if tc.augment else 'off'}; validation by the reverse process on probabilities")

    def step_fn(net: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, step: int) -> dict[str, Any]:
        if tc.augment:
            pixels = PAPER_AUGMENTATION(pixels, step_generator(tc.seed, step, ctx.rank, "cpu", stream=AUGMENT_STREAM))
        gen = step_generator(tc.seed, step, ctx.rank, device)
        return label_diffusion_loss(net, pixels, labels, options, model.num_classes, gen)

    batches = val_batches(setup) if ctx.is_main and len(setup.val_m) else None

    def validate(inference: nn.Module) -> dict[str, float]:
        inference.eval()
        with setup.amp():
            return evaluate_probs(lambda px: model.predict_probabilities(px, inference)[0], batches(), device)

    ema = EMA(network, beta=tc.ema_beta, warmup=tc.ema_warmup, every=tc.ema_every)
    return run_loop(setup, network, step_fn, model.metadata_fields(),
                    validate=validate if batches is not None else None, ema=ema)
