"""Model registry: a config string picks a builder and its typed settings (timm-style ``create_model``).

Every denoiser has the same call signature, whatever its architecture:

    v_hat = denoiser(z, time, labels)
        z:      [B, C, H, W] noisy input (pixels or Haar wavelet coefficients)
        time:   [B] float, the log-SNR (or scaled t, see DiffusionConfig.time_input)
        labels: [B] long, class index in 0..num_classes-1, or num_classes for the null (unconditional) class
        v_hat:  [B, C, H, W]
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from meddiff.config import ModelConfig, from_dict
from meddiff.errors import ConfigError
from meddiff.models import dit, unet

# name -> (typed settings class, builder(settings, in_channels, sample_size, num_classes) -> nn.Module)
MODELS: dict[str, tuple[type, Callable[..., nn.Module]]] = {
    "unet": (unet.UNetConfig, unet.build_unet),
    "dit": (dit.DiTConfig, dit.build_dit),
}


def model_settings(model_cfg: ModelConfig) -> Any:
    """The typed settings object of ``model_cfg`` (strict: unknown keys are errors)."""
    if model_cfg.name not in MODELS:
        raise ConfigError(f"model.name: unknown model {model_cfg.name!r}; known models are {sorted(MODELS)}")
    settings_cls, _ = MODELS[model_cfg.name]
    return from_dict(settings_cls, model_cfg.params, "model.params")


def create_denoiser(model_cfg: ModelConfig, in_channels: int, sample_size: int, num_classes: int) -> nn.Module:
    """Build the denoiser ``model_cfg`` names for inputs of [in_channels, sample_size, sample_size] and ``num_classes``."""
    settings = model_settings(model_cfg)
    _, build = MODELS[model_cfg.name]
    return build(settings, in_channels=in_channels, sample_size=sample_size, num_classes=num_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
