"""A trained D-Cube classifier: the frozen diffusion model, the selected layers and how they are read (``FeatureSpec``),
and the head. ``DCubeModel`` is what ``train_dcube`` produces and what ``DCubePredictor`` consumes.

A bundle of kind ``dcube`` holds only the head (model.safetensors, with the feature standardisation) and, in its
metadata, the selected layers, t and the other feature settings, and the frozen diffusion checkpoint's absolute path,
model_id and weights hash; loading it loads that diffusion checkpoint and refuses one whose weights changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from meddiff.diffusion.model import DiffusionModel, load_diffusion_model
from meddiff.errors import CheckpointError
from meddiff.methods.dcube.features import FeatureSpec, candidate_layers, image_features
from meddiff.methods.dcube.head import DCubeHead
from meddiff.bundle import load_weights, read_bundle, resolve_bundle

KIND = "dcube"
HEAD_NAME = "dcube-head"


def load_frozen_diffusion(path: str | Path, device: torch.device | str = "cpu", what: str = "D-Cube") -> DiffusionModel:
    """The frozen diffusion model at ``path`` (a run folder, checkpoints/ folder or bundle), with a clear error when it
    is missing or is not a diffusion model."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"{what}: the frozen diffusion checkpoint {path} does not exist. D-Cube reads features from a trained meddiff "
            f"diffusion model: run `meddiff demo` (PneumoniaMNIST, writes runs/demo-pneumonia) or `meddiff demo "
            f"--dataset isic` (runs/demo-isic) first, or set method_options.diffusion_checkpoint to a diffusion run "
            f"(a relative path is taken relative to output_dir)"
        )
    bundle = read_bundle(path)
    if bundle.metadata.get("kind") != "diffusion":
        raise CheckpointError(f"{what}: {bundle.path} is a {bundle.metadata.get('kind')!r} checkpoint; "
                              f"method_options.diffusion_checkpoint must be a diffusion model")
    return load_diffusion_model(bundle.path, device)


@dataclass
class DCubeModel:
    diffusion: DiffusionModel
    spec: FeatureSpec
    head: DCubeHead
    model_id: str = "untrained"
    metadata: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        available = candidate_layers(self.diffusion.denoiser, "layer")
        available.update(candidate_layers(self.diffusion.denoiser, "block"))
        missing = [n for n in self.spec.layers if n not in available]
        if missing:
            raise CheckpointError(f"D-Cube: layers {missing} do not exist in the frozen diffusion model "
                                  f"(it has {sorted(available)})")
        self.layers: dict[str, nn.Module] = {n: available[n] for n in self.spec.layers}

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.diffusion.class_names

    @property
    def num_classes(self) -> int:
        return self.diffusion.num_classes

    @property
    def nfe(self) -> int:
        return self.spec.passes_per_image(self.num_classes)

    def features(self, pixels: torch.Tensor, ids: Sequence[str], seed: int) -> torch.Tensor:
        """[B, channels, S, S] pixels in [-1, 1] -> the head's input [B, D_total] (selected layers concatenated)."""
        feats = image_features(self.diffusion, self.layers, self.spec, pixels, ids, seed)
        return torch.cat([feats[n] for n in self.spec.layers], dim=1)

    @torch.no_grad()
    def logits(self, pixels: torch.Tensor, ids: Sequence[str], seed: int) -> torch.Tensor:
        """[B, channels, S, S] -> float32 logits [B, num_classes] (head in eval mode)."""
        return self.head.eval()(self.features(pixels, ids, seed)).float()


def metadata_fields(diffusion: DiffusionModel, frozen_path: Path, spec: FeatureSpec, head: DCubeHead,
                    extra: dict[str, Any]) -> dict[str, Any]:
    """What a dcube bundle needs to rebuild the classifier (``extra``: selection details for the record)."""
    meta_d = diffusion.metadata or {}
    return {
        "kind": KIND,
        "model": {"name": HEAD_NAME, "params": {"hidden": head.hidden, "dropout": _dropout(head)}},
        "class_names": list(diffusion.class_names),
        "image_size": diffusion.image_size,
        "channels": diffusion.channels,
        "dcube": {
            "diffusion_checkpoint": str(resolve_bundle(frozen_path).resolve()),
            "diffusion_model_id": diffusion.model_id,
            "diffusion_weights_sha256": meta_d.get("weights_sha256"),
            "t": spec.t,
            "input": spec.input,
            "conditioning": spec.conditioning,
            "pool": spec.pool,
            "layers": list(spec.layers),
            "layer_dims": list(head.dims),
            "nfe": spec.passes_per_image(diffusion.num_classes),
            **extra,
        },
    }


def _dropout(head: DCubeHead) -> float:
    return float(head.drop.p) if hasattr(head, "drop") else 0.0


def load_dcube_model(path: str | Path, device: torch.device | str = "cpu") -> DCubeModel:
    """Rebuild a D-Cube classifier from its bundle (and the frozen diffusion checkpoint it names), in eval mode."""
    bundle = read_bundle(path)
    meta = bundle.metadata
    if meta.get("kind") != KIND:
        raise CheckpointError(f"{bundle.path}: is a {meta.get('kind')!r} checkpoint, not a {KIND} classifier")
    d = meta["dcube"]
    diffusion = load_frozen_diffusion(d["diffusion_checkpoint"], device, what=str(bundle.path))
    if diffusion.model_id != d["diffusion_model_id"]:
        raise CheckpointError(
            f"{bundle.path}: was trained on the frozen diffusion model {d['diffusion_model_id']}, but "
            f"{d['diffusion_checkpoint']} now holds {diffusion.model_id}; retrain the D-Cube head on the current model"
        )
    spec = FeatureSpec(t=float(d["t"]), input=d["input"], conditioning=d["conditioning"], pool=d["pool"],
                       layers=tuple(d["layers"]))
    head = DCubeHead(spec.layers, d["layer_dims"], len(meta["class_names"]), hidden=int(meta["model"]["params"]["hidden"]),
                     dropout=float(meta["model"]["params"]["dropout"]))
    load_weights(bundle, head)
    head.to(device).eval().requires_grad_(False)
    return DCubeModel(diffusion, spec, head, model_id=bundle.model_id, metadata=meta)
