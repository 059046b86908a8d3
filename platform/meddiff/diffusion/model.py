"""A trained diffusion classifier's model: denoiser + schedule + the input space it works in.

``DiffusionModel`` is what training produces and what scoring, serving and counterfactuals consume. Pixels are
[-1, 1] images [B, channels, image_size, image_size]; the denoiser works in *model space*: the same pixels, or their
single-stage Haar DWT [B, 4 channels, image_size / 2, image_size / 2] when ``diffusion.wavelet`` is on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from meddiff.config import DiffusionConfig, ModelConfig, from_dict
from meddiff.data.wavelet import haar_dwt, haar_idwt
from meddiff.diffusion.schedule import ShiftedCosineSchedule, schedule_from_config
from meddiff.errors import CheckpointError
from meddiff.models import create_denoiser
from meddiff.bundle import read_bundle, load_weights


@dataclass
class DiffusionModel:
    denoiser: nn.Module
    schedule: ShiftedCosineSchedule
    diffusion: DiffusionConfig
    model_cfg: ModelConfig
    class_names: tuple[str, ...]
    image_size: int
    channels: int
    model_id: str = "untrained"
    metadata: dict[str, Any] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def model_shape(self) -> tuple[int, int, int]:
        """[C, H, W] of the denoiser's input."""
        if self.diffusion.wavelet:
            return (4 * self.channels, self.image_size // 2, self.image_size // 2)
        return (self.channels, self.image_size, self.image_size)

    def to_model_space(self, pixels: torch.Tensor) -> torch.Tensor:
        return haar_dwt(pixels) if self.diffusion.wavelet else pixels

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        return haar_idwt(x) if self.diffusion.wavelet else x

    def metadata_fields(self) -> dict[str, Any]:
        """What a checkpoint bundle needs to rebuild this model."""
        from meddiff.config import to_dict

        return {
            "kind": "diffusion",
            "model": to_dict(self.model_cfg),
            "diffusion": to_dict(self.diffusion),
            "class_names": list(self.class_names),
            "image_size": self.image_size,
            "channels": self.channels,
            "model_shape": list(self.model_shape),
        }


def build_diffusion_model(
    model_cfg: ModelConfig, diffusion: DiffusionConfig, class_names: tuple[str, ...], image_size: int, channels: int
) -> DiffusionModel:
    """A freshly initialised model for training."""
    in_ch = 4 * channels if diffusion.wavelet else channels
    side = image_size // 2 if diffusion.wavelet else image_size
    denoiser = create_denoiser(model_cfg, in_channels=in_ch, sample_size=side, num_classes=len(class_names))
    return DiffusionModel(
        denoiser=denoiser,
        schedule=schedule_from_config(diffusion, image_size),
        diffusion=diffusion,
        model_cfg=model_cfg,
        class_names=tuple(class_names),
        image_size=image_size,
        channels=channels,
    )


def load_diffusion_model(path, device: torch.device | str = "cpu") -> DiffusionModel:
    """Rebuild the architecture from a bundle's metadata.json and load its inference (EMA) weights, in eval mode."""
    bundle = read_bundle(path)
    meta = bundle.metadata
    if meta.get("kind") != "diffusion":
        raise CheckpointError(f"{bundle.path}: is a {meta.get('kind')!r} checkpoint, not a diffusion model")
    model = build_diffusion_model(
        from_dict(ModelConfig, meta["model"], "metadata.model"),
        from_dict(DiffusionConfig, meta["diffusion"], "metadata.diffusion"),
        tuple(meta["class_names"]),
        int(meta["image_size"]),
        int(meta["channels"]),
    )
    load_weights(bundle, model.denoiser)
    model.denoiser.to(device).eval().requires_grad_(False)
    model.model_id = bundle.model_id
    model.metadata = meta
    return model
