"""A trained discriminative baseline: the timm network + what it was trained on (classes, image size, channels).

``BaselineModel`` is what ``train_baseline`` produces and what ``BaselinePredictor`` consumes, the counterpart of
``meddiff.diffusion.model.DiffusionModel``. A bundle with metadata ``kind: "baseline"`` rebuilds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from meddiff.config import ModelConfig, from_dict, to_dict
from meddiff.errors import CheckpointError
from meddiff.models.baselines import create_baseline
from meddiff.bundle import load_weights, read_bundle

KIND = "baseline"


@dataclass
class BaselineModel:
    """network: images [B, channels, image_size, image_size] in [-1, 1] -> logits [B, len(class_names)]."""

    network: nn.Module
    model_cfg: ModelConfig
    class_names: tuple[str, ...]
    image_size: int
    channels: int
    model_id: str = "untrained"
    metadata: dict[str, Any] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def metadata_fields(self) -> dict[str, Any]:
        """What a checkpoint bundle needs to rebuild this model."""
        return {
            "kind": KIND,
            "model": to_dict(self.model_cfg),
            "class_names": list(self.class_names),
            "image_size": self.image_size,
            "channels": self.channels,
        }


def build_baseline_model(model_cfg: ModelConfig, class_names: tuple[str, ...], image_size: int, channels: int,
                         load_weights: bool = True) -> BaselineModel:
    """A freshly built model (random, or ``model.params.weights`` when ``load_weights``)."""
    network = create_baseline(model_cfg, in_chans=channels, num_classes=len(class_names), image_size=image_size,
                              load_weights=load_weights)
    return BaselineModel(network, model_cfg, tuple(class_names), image_size, channels)


def load_baseline_model(path: str | Path, device: torch.device | str = "cpu") -> BaselineModel:
    """Rebuild the architecture from a bundle's metadata.json and load its weights, in eval mode.

    ``path``: a bundle, its checkpoints/ folder or the run folder (newest bundle). The initial ``params.weights`` file
    is not read: the bundle's weights replace it.
    """
    bundle = read_bundle(path)
    meta = bundle.metadata
    if meta.get("kind") != KIND:
        raise CheckpointError(f"{bundle.path}: is a {meta.get('kind')!r} checkpoint, not a {KIND} classifier")
    model = build_baseline_model(
        from_dict(ModelConfig, meta["model"], "metadata.model"),
        tuple(meta["class_names"]),
        int(meta["image_size"]),
        int(meta["channels"]),
        load_weights=False,
    )
    load_weights(bundle, model.network)
    model.network.to(device).eval().requires_grad_(False)
    model.model_id = bundle.model_id
    model.metadata = meta
    return model
