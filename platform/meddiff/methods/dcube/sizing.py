"""D-Cube at full size (``meddiff.methods.sizing``): the frozen diffusion denoiser it reads features from and the head.

The frozen denoiser's architecture is the checkpoint's (``method_options.diffusion_checkpoint``) when it is on this
machine; otherwise the config of that run found beside this config (a YAML file in ``config_dir`` whose ``name`` is
the checkpoint folder's name, e.g. jobs/configs/chexpert-unet-a100.yaml for ``chexpert-unet-paper``), said in the note.
Its features are extracted once per run (one pass per image, two with flips, x classes with per-class conditioning),
so a training step runs only the head; a scored image costs ``FeatureSpec.passes_per_image`` denoiser passes + the head.
The head reads the layers the KS selection keeps, which only training decides: unless ``method_options.layers``
names them, it is sized on every candidate layer (an upper bound; the head is < 1 % of the work either way).
"""

from __future__ import annotations

from pathlib import Path

import torch

from meddiff.bundle import read_bundle
from meddiff.config import DiffusionConfig, ExperimentConfig, ModelConfig, from_dict, load_config
from meddiff.errors import CheckpointError, ConfigError, MeddiffError
from meddiff.methods.dcube.features import FeatureSpec, candidate_layers, captured
from meddiff.methods.dcube.head import DCubeHead
from meddiff.methods.dcube.options import frozen_checkpoint_path, parse_options
from meddiff.methods.sizing import SizedNetwork
from meddiff.models import create_denoiser


def frozen_architecture(cfg: ExperimentConfig, config_dir: Path | None) -> tuple[ModelConfig, DiffusionConfig, str]:
    """(model, diffusion settings, where they came from) of the frozen diffusion model."""
    opts = parse_options(cfg)
    path = frozen_checkpoint_path(opts, cfg.output_dir)
    if path.exists():
        try:
            meta = read_bundle(path).metadata
        except MeddiffError:
            meta = {}
        if meta.get("kind") == "diffusion":
            return (from_dict(ModelConfig, meta["model"], "metadata.model"),
                    from_dict(DiffusionConfig, meta["diffusion"], "metadata.diffusion"), f"checkpoint {path}")
    run = Path(opts.diffusion_checkpoint).name
    for candidate in sorted(config_dir.glob("*.yaml")) if config_dir else []:
        try:
            other = load_config(candidate)
        except MeddiffError:
            continue
        if other.name == run and other.method == "diffusion":
            return other.model, other.diffusion, f"frozen denoiser from {candidate.name} (checkpoint {path} absent)"
    raise CheckpointError(
        f"method_options.diffusion_checkpoint: {path} is not on this machine and no config named {run!r} with "
        f"method diffusion is in {config_dir}; train it first or put its config beside this one")


def full_size(cfg: ExperimentConfig, num_classes: int, device, config_dir: Path | None = None) -> dict[str, SizedNetwork]:
    opts = parse_options(cfg)
    model_cfg, diffusion, source = frozen_architecture(cfg, config_dir)
    c, s = cfg.data.channels, cfg.data.image_size
    shape = (4 * c, s // 2, s // 2) if diffusion.wavelet else (c, s, s)
    spec = FeatureSpec(opts.t, opts.input, opts.conditioning, opts.pool)
    passes = spec.passes_per_image(num_classes)
    with torch.device(device):
        denoiser = create_denoiser(model_cfg, in_channels=shape[0], sample_size=shape[1], num_classes=num_classes)
    denoiser.requires_grad_(False)

    def denoiser_inputs(batch: int, dev) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch, *shape, device=dev), torch.zeros(batch, device=dev),
                torch.full((batch,), num_classes, dtype=torch.long, device=dev))

    layers = candidate_layers(denoiser, opts.granularity)
    if opts.layers:
        unknown = sorted(set(opts.layers) - set(layers))
        if unknown:
            raise ConfigError(f"method_options.layers: {unknown} are not layers of the frozen denoiser; "
                              f"known: {sorted(layers)}")
        layers = {n: layers[n] for n in opts.layers}
    with torch.no_grad(), captured(layers, opts.pool) as store:
        denoiser(*denoiser_inputs(1, "meta"))
    dims = [store[n].shape[1] * passes for n in layers]
    with torch.device(device):
        head = DCubeHead(tuple(layers), dims, num_classes, opts.hidden, opts.dropout)

    def head_inputs(batch: int, dev) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch, sum(dims), device=dev),)

    extract = (2 if opts.needs_flips else 1) * passes
    return {
        "frozen_denoiser": SizedNetwork(denoiser, denoiser_inputs, trained=False, train_forwards=0,
                                        score_forwards=passes,
                                        note=f"{source}; features extracted once per run ({extract} pass(es) per "
                                             f"training image)"),
        "head": SizedNetwork(head, head_inputs, trained=True, train_forwards=1, score_forwards=1, ema=True,
                             note="" if opts.layers else f"on all {len(layers)} candidate layers (the KS selection "
                                                         f"keeps a subset: an upper bound)"),
    }
