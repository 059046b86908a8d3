"""Mediffusion-style joint diffusion classifier (Mediffusion, arXiv 2411.09434).

One UNet is shared by a denoiser and a classifier (``meddiff.methods.mediffusion.net.JointUNet``) and trained jointly, semi-supervised:
  1. A seeded, class-stratified ``label_fraction`` of the training images keep their labels (paper: 20 %); the others
     are unlabelled (their label is replaced by -1 in every batch).
  2. Every image, labelled or not, gets the platform's diffusion loss (``meddiff.diffusion.loss``: shifted cosine
     schedule, v-prediction, min-SNR weight; Haar DWT when ``diffusion.wavelet``), with the UNet unconditional.
  3. The labelled images of the batch also go through the encoder at a light noise level t ~ U(0, classifier_t_max)
     (z_t = alpha x + sigma eps, fresh eps) and the head's cross-entropy is added with weight ``classifier_weight``:
        loss = L_diffusion + classifier_weight * CE(head(encoder(z_t, t)), y).
     Light noise rather than the clean image only, because classifier guidance (4.) needs a head that reads noisy
     inputs; rather than the denoising pass's own t ~ U(0, 1), because the label is unreadable at high noise.
     The default classifier_t_max 0.5 covers the counterfactual start of chest X-rays (0.3 for skin).
  4. Prediction: the head on the clean image (t = 0): one encoder evaluation per image (nfe 1), prob = softmax,
     uncertainty = normalised softmax entropy, no vote columns. Counterfactuals: classifier guidance with the head's
     gradient (``meddiff.methods.mediffusion.guidance``).

Where this simplifies the paper: no latent autoencoder (the diffusion runs on pixels or their Haar DWT, like the rest
of the platform); the head is a small MLP on the pooled outputs of every down block and the mid block (the paper's
exact head is not specified in our summary); EMA weights (``train.ema_*``) serve both the denoiser and the head;
no augmentation (``train.augment`` is not used), as the platform's other diffusion models.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from meddiff.config import DiffusionConfig, ExperimentConfig, ModelConfig, from_dict, to_dict
from meddiff.data import Manifest
from meddiff.diffusion.ema import EMA
from meddiff.diffusion.loss import min_snr_weight, noise_batch, time_input
from meddiff.diffusion.model import DiffusionModel
from meddiff.diffusion.schedule import ShiftedCosineSchedule, schedule_from_config
from meddiff.diffusion.vparam import v_target
from meddiff.errors import CheckpointError, ConfigError
from meddiff.methods.mediffusion.net import JointUNet
from meddiff.train.loop import evaluate_probs, run_loop, seeded_init, setup_run, val_batches
from meddiff.models.registry import model_settings
from meddiff.train.batches import sample_batch, step_generator
from meddiff.bundle import load_weights, read_bundle
from meddiff.train.context import LocalContext

KIND = "mediffusion"


@dataclass(frozen=True)
class MediffusionOptions:
    """``method_options`` of a Mediffusion run.

    label_fraction: share of the training images that keep their label (per class, at least one each; 1.0 = fully
        supervised, the paper's upper bound); which ones is seeded by ``label_seed``.
    classifier_weight: weight of the head's cross-entropy beside the diffusion loss.
    classifier_t_max: the head is trained on inputs noised to t ~ U(0, classifier_t_max) (0 = clean images only;
        classifier guidance needs it to cover the counterfactual's t_start).
    head_hidden / head_dropout: the MLP head's hidden width and dropout.
    """

    label_fraction: float = 0.2
    label_seed: int = 0
    classifier_weight: float = 1.0
    classifier_t_max: float = 0.5
    head_hidden: int = 256
    head_dropout: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.label_fraction <= 1.0:
            raise ConfigError(f"method_options.label_fraction: expected a fraction in (0, 1], got "
                              f"{self.label_fraction!r}")
        if self.label_seed < 0:
            raise ConfigError(f"method_options.label_seed: expected a non-negative integer, got {self.label_seed!r}")
        if self.classifier_weight < 0:
            raise ConfigError(f"method_options.classifier_weight: expected >= 0, got {self.classifier_weight!r}")
        if not 0.0 <= self.classifier_t_max <= 1.0:
            raise ConfigError(f"method_options.classifier_t_max: expected a time in [0, 1], got "
                              f"{self.classifier_t_max!r}")
        if self.head_hidden < 1 or not 0.0 <= self.head_dropout < 1.0:
            raise ConfigError("method_options.head_hidden / head_dropout: expected a positive width and a dropout in "
                              f"[0, 1), got {self.head_hidden!r} / {self.head_dropout!r}")


def parse_options(method_options: Any) -> MediffusionOptions:
    return from_dict(MediffusionOptions, method_options, "method_options")


@dataclass
class MediffusionModel(DiffusionModel):
    """A ``DiffusionModel`` whose denoiser is a ``JointUNet`` (so the samplers accept it) plus the head's settings."""

    options: MediffusionOptions = field(default_factory=MediffusionOptions)

    def metadata_fields(self) -> dict[str, Any]:
        return dict(super().metadata_fields(), kind=KIND, method_options=to_dict(self.options))

    def clean_time(self, n: int, device: torch.device) -> torch.Tensor:
        """[n] the denoiser's time input at t = 0 (the clean image), where the head predicts."""
        t = torch.zeros(n, device=device)
        return time_input(self.schedule.logsnr(t), t, self.diffusion.time_input)

    def head_logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, channels, S, S] pixels in [-1, 1] -> [B, num_classes] logits of the head at t = 0."""
        x = self.to_model_space(pixels)
        return self.denoiser.classify(x, self.clean_time(x.shape[0], x.device))


class HeadClassifier(nn.Module):
    """pixels -> logits through the joint model's head at t = 0: the ``network`` a ``BaselinePredictor`` calls."""

    def __init__(self, model: MediffusionModel) -> None:
        super().__init__()
        self.denoiser = model.denoiser  # registered, so .to() / .eval() reach the UNet
        self._model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._model.head_logits(pixels)


def build_mediffusion_model(model_cfg: ModelConfig, diffusion: DiffusionConfig, options: MediffusionOptions,
                            class_names: tuple[str, ...], image_size: int, channels: int) -> MediffusionModel:
    if model_cfg.name != "unet":
        raise ConfigError(f"model.name: Mediffusion shares a UNet between denoiser and classifier; use 'unet', got "
                          f"{model_cfg.name!r}")
    settings = model_settings(model_cfg)
    in_ch = 4 * channels if diffusion.wavelet else channels
    side = image_size // 2 if diffusion.wavelet else image_size
    net = JointUNet(settings, in_ch, side, len(class_names), options.head_hidden, options.head_dropout)
    return MediffusionModel(denoiser=net, schedule=schedule_from_config(diffusion, image_size), diffusion=diffusion,
                            model_cfg=model_cfg, class_names=tuple(class_names), image_size=image_size,
                            channels=channels, options=options)


def load_mediffusion_model(path, device: torch.device | str = "cpu") -> MediffusionModel:
    """Rebuild the joint model from a bundle's metadata.json and load its (EMA) weights, in eval mode."""
    bundle = read_bundle(path)
    meta = bundle.metadata
    if meta.get("kind") != KIND:
        raise CheckpointError(f"{bundle.path}: is a {meta.get('kind')!r} checkpoint, not a {KIND} model")
    model = build_mediffusion_model(
        from_dict(ModelConfig, meta["model"], "metadata.model"),
        from_dict(DiffusionConfig, meta["diffusion"], "metadata.diffusion"),
        parse_options(meta.get("method_options", {})),
        tuple(meta["class_names"]), int(meta["image_size"]), int(meta["channels"]),
    )
    load_weights(bundle, model.denoiser)
    model.denoiser.to(device).eval().requires_grad_(False)
    model.model_id = bundle.model_id
    model.metadata = meta
    return model


def labelled_mask(train_m: Manifest, fraction: float, seed: int) -> np.ndarray:
    """[N] bool over the training rows: which images keep their label (module docstring, step 1).

    Per class, ids are sorted (independent of row order) and ceil(fraction * n_c) of them drawn with a generator
    seeded by (seed, class), so adding a class or reordering rows changes nothing else.
    """
    keep = np.zeros(len(train_m), dtype=bool)
    labels = train_m.frame["label"].to_numpy()
    ids = train_m.frame["id"].astype(str).to_numpy()
    for cls in np.unique(labels):
        rows = np.flatnonzero(labels == cls)
        rows = rows[np.argsort(ids[rows], kind="stable")]
        n_keep = min(len(rows), max(1, math.ceil(fraction * len(rows) - 1e-9)))
        keep[np.random.default_rng([seed, int(cls)]).choice(rows, size=n_keep, replace=False)] = True
    return keep


def joint_loss(net: nn.Module, x: torch.Tensor, labels: torch.Tensor, schedule: ShiftedCosineSchedule,
               diffusion: DiffusionConfig, options: MediffusionOptions,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The joint objective of one batch (module docstring, steps 2-3).

    Args:
        net: a ``JointUNet`` (or its DDP wrapper).
        x: [B, C, H, W] clean inputs in model space; labels: [B] class indices, -1 for unlabelled images.
        generator: seeds t, eps (denoising) and t, eps (head input), on x's device.
    Returns: {"loss", "loss_diffusion", "loss_ce", "accuracy" (labelled images of the batch), "labelled" (their count)}.
    """
    # 2. the diffusion loss on every image (meddiff.diffusion.loss, without class dropout: the UNet is unconditional)
    t, eps, logsnr, alpha, sigma, z = noise_batch(x, schedule, generator)
    # 3. the labelled images at a light noise level t_c ~ U(0, classifier_t_max)
    lab = labels >= 0
    xl, yl = x[lab], labels[lab]
    t_c, _, logsnr_c, _, _, z_c = noise_batch(xl, schedule, generator, options.classifier_t_max)
    v_hat, logits = net(z, time_input(logsnr, t, diffusion.time_input), None,
                        cls_z=z_c, cls_time=time_input(logsnr_c, t_c, diffusion.time_input))
    per_sample = (v_hat.float() - v_target(x, eps, alpha, sigma).float()).pow(2).flatten(1).mean(1)
    if diffusion.loss_weight == "min_snr":
        per_sample = per_sample * min_snr_weight(logsnr, diffusion.min_snr_gamma)
    loss_diffusion = per_sample.mean()
    logits = logits.float()
    if yl.numel():
        loss_ce = F.cross_entropy(logits, yl)
        accuracy = (logits.argmax(dim=1) == yl).float().mean()
    else:  # no labelled image in this batch: keep the head in the graph (DDP) with a zero loss
        loss_ce = logits.sum() * 0.0
        accuracy = torch.tensor(float("nan"))
    return {"loss": loss_diffusion + options.classifier_weight * loss_ce, "loss_diffusion": loss_diffusion,
            "loss_ce": loss_ce, "accuracy": accuracy, "labelled": torch.tensor(float(yl.numel()))}


def train_mediffusion(cfg: ExperimentConfig, context: LocalContext | None = None) -> Path | None:
    """Train (or resume) the Mediffusion run ``cfg.output_dir/cfg.name``; returns the final bundle (rank 0)."""
    options = parse_options(cfg.method_options)
    setup = setup_run(cfg, context, KIND)
    tc, ctx, device = cfg.train, setup.ctx, setup.device
    with seeded_init(tc.seed):
        model = build_mediffusion_model(cfg.model, cfg.diffusion, options, setup.manifest.class_names,
                                        cfg.data.image_size, cfg.data.channels)
    network = model.denoiser.to(device)
    if device.type == "cuda":
        network = network.to(memory_format=torch.channels_last)
    ema = EMA(network, beta=tc.ema_beta, warmup=tc.ema_warmup, every=tc.ema_every)
    keep = labelled_mask(setup.train_m, options.label_fraction, options.label_seed)
    n_labelled = int(keep.sum())
    keep_t = torch.from_numpy(keep)
    if ctx.is_main:
        ctx.log(f"[train] {n_labelled} of {len(keep)} training images keep their label (label_fraction "
                f"{options.label_fraction}, seed {options.label_seed}); denoising loss on all of them")

    def step_fn(net: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, step: int) -> dict[str, Any]:
        # the batch's row indices are the (seed, step, rank) draw every batch source uses (train.batches)
        rows = sample_batch(len(keep), tc.batch_size, tc.seed, step, ctx.rank)
        labels = torch.where(keep_t[rows].to(labels.device), labels, torch.full_like(labels, -1))
        gen = step_generator(tc.seed, step, ctx.rank, device)
        out = joint_loss(net, model.to_model_space(pixels), labels, model.schedule, cfg.diffusion, options, gen)
        if math.isnan(float(out["accuracy"])):
            del out["accuracy"]  # a batch without labels says nothing about accuracy
        return out

    batches = val_batches(setup) if ctx.is_main and len(setup.val_m) else None

    def validate(inference: nn.Module) -> dict[str, float]:
        inference.eval()
        view = dataclasses.replace(model, denoiser=inference)
        with setup.amp():
            return evaluate_probs(lambda px: torch.softmax(view.head_logits(px).float(), dim=-1), batches(), device)

    metadata = dict(model.metadata_fields(), labelled_images=n_labelled)
    return run_loop(setup, network, step_fn, metadata,
                    validate=validate if batches is not None else None, ema=ema)
