"""Discriminative baselines (paper Table 1): a config string picks a timm classifier, ``create_baseline`` builds it.

Registry names (``model.name`` when ``method: baseline``) and the timm architectures they build:

    resnet18         resnet18                        ResNet-18         (paper: Adam lr 1e-4)
    resnet50         resnet50                        ResNet-50         (1e-4)
    efficientnet_b0  efficientnet_b0                 EfficientNet-B0   (1e-4)
    efficientnet_b4  efficientnet_b4                 EfficientNet-B4   (1e-4)
    vit_s16          vit_small_patch16_224           ViT-S/16          (1e-5)
    vit_b16          vit_base_patch16_224            ViT-B/16          (1e-5)
    swin_b           swin_base_patch4_window7_224    Swin-B            (1e-5)

The timm names are accepted as aliases. Every network maps images [B, in_chans, S, S] in [-1, 1] (the decoder's scale,
no ImageNet normalisation) to logits [B, num_classes]. Nothing is ever downloaded (``pretrained=False`` always): the
weights are random, or read from a local ``.safetensors`` file given as ``params.weights``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from meddiff.config import ModelConfig, from_dict
from meddiff.errors import CheckpointError, ConfigError


@dataclass(frozen=True)
class BaselineSpec:
    """timm_name: the architecture timm builds. fixed_size: the network is built for one input side (ViT, Swin take
    ``img_size``; CNNs take any size). transformer: the paper's lr group (1e-5 instead of 1e-4)."""

    timm_name: str
    fixed_size: bool = False
    transformer: bool = False


BASELINES: dict[str, BaselineSpec] = {
    "resnet18": BaselineSpec("resnet18"),
    "resnet50": BaselineSpec("resnet50"),
    "efficientnet_b0": BaselineSpec("efficientnet_b0"),
    "efficientnet_b4": BaselineSpec("efficientnet_b4"),
    "vit_s16": BaselineSpec("vit_small_patch16_224", fixed_size=True, transformer=True),
    "vit_b16": BaselineSpec("vit_base_patch16_224", fixed_size=True, transformer=True),
    "swin_b": BaselineSpec("swin_base_patch4_window7_224", fixed_size=True, transformer=True),
}
_ALIASES = {spec.timm_name: name for name, spec in BASELINES.items() if spec.timm_name != name}

# create_baseline sets these itself; a config that sets them would silently disagree with the data or download weights
_RESERVED_KWARGS = ("pretrained", "num_classes", "in_chans", "checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay")


@dataclass(frozen=True)
class BaselineConfig:
    """Typed ``model.params`` of a baseline.

    weights: a local .safetensors state dict to start from (e.g. converted ImageNet weights, or a trained baseline's
        ``model.safetensors``), loaded strictly; None = random initialisation.
    reset_head: keep the classifier head (timm's ``pretrained_cfg["classifier"]``, e.g. ``fc``, ``head``) randomly
        initialised and load everything else strictly: for weights trained with another number of classes.
    timm_kwargs: passed through to ``timm.create_model`` (depth, embed_dim, drop_rate, drop_path_rate, layers, ...).
        ``img_size`` may be given for ViT/Swin but must equal ``data.image_size`` (it is set from it otherwise).
    """

    weights: str | None = None
    reset_head: bool = False
    timm_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        reserved = sorted(set(self.timm_kwargs) & set(_RESERVED_KWARGS))
        if reserved:
            raise ConfigError(
                f"model.params.timm_kwargs: {reserved} are set by meddiff (classes and channels come from the data, "
                f"weights from model.params.weights, nothing is downloaded); remove them"
            )
        if self.reset_head and self.weights is None:
            raise ConfigError("model.params.reset_head: true needs model.params.weights (a .safetensors file)")


def baseline_spec(name: str) -> tuple[str, BaselineSpec]:
    """(registry name, spec) of a registry name or timm alias; unknown names are a ConfigError listing the known ones."""
    name = _ALIASES.get(name, name)
    if name not in BASELINES:
        raise ConfigError(f"model.name: unknown baseline {name!r}; known baselines are {sorted(BASELINES)} "
                          f"(or their timm names {sorted(_ALIASES)})")
    return name, BASELINES[name]


def baseline_settings(model_cfg: ModelConfig) -> BaselineConfig:
    """The typed settings of ``model_cfg`` (strict: unknown keys are errors)."""
    baseline_spec(model_cfg.name)
    return from_dict(BaselineConfig, model_cfg.params, "model.params")


def create_baseline(model_cfg: ModelConfig, in_chans: int, num_classes: int, image_size: int,
                    load_weights: bool = True) -> nn.Module:
    """Build the classifier ``model_cfg`` names.

    Args:
        in_chans, num_classes, image_size: the data's channels, classes and image side.
        load_weights: read ``params.weights`` (False when a checkpoint's weights replace them anyway).
    Returns: a module mapping [B, in_chans, image_size, image_size] in [-1, 1] to logits [B, num_classes].
    """
    import timm  # slow to import; only baseline runs need it

    name, spec = baseline_spec(model_cfg.name)
    settings = baseline_settings(model_cfg)
    kwargs = dict(settings.timm_kwargs)
    if spec.fixed_size:
        if kwargs.setdefault("img_size", image_size) != image_size:
            raise ConfigError(
                f"model.params.timm_kwargs.img_size = {kwargs['img_size']} but data.image_size = {image_size}: "
                f"{name} is built for one input size; remove img_size (it follows data.image_size) or make them equal"
            )
    try:
        net = timm.create_model(spec.timm_name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    except (TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(
            f"model.params.timm_kwargs {settings.timm_kwargs}: timm.create_model({spec.timm_name!r}) rejected them: {exc}"
        ) from None
    if load_weights and settings.weights is not None:
        load_weights_file(net, settings.weights, reset_head=settings.reset_head)
    return net


def head_prefix(net: nn.Module) -> str:
    """State-dict prefix of a timm model's classifier head (``fc``, ``classifier``, ``head`` or ``head.fc``)."""
    return str(getattr(net, "pretrained_cfg", {}).get("classifier", "head"))


def load_weights_file(net: nn.Module, path: str | Path, reset_head: bool = False) -> nn.Module:
    """Load a local .safetensors state dict into ``net`` strictly (every key, every shape).

    With ``reset_head`` the classifier head's keys are skipped (and must not be the only ones the file has).
    A mismatch raises CheckpointError naming the missing, unexpected and differently shaped keys.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(f"model.params.weights: {path} is not a .safetensors file; convert the state dict with "
                          f"safetensors.torch.save_file (meddiff never unpickles .pt/.pth files)")
    if not path.is_file():
        raise ConfigError(f"model.params.weights: {path} does not exist")
    state = load_file(str(path))
    expected = net.state_dict()
    head = head_prefix(net)

    def is_head(key: str) -> bool:
        return key == head or key.startswith(head + ".")

    if reset_head:
        state = {k: v for k, v in state.items() if not is_head(k)}
        expected = {k: v for k, v in expected.items() if not is_head(k)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                    for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or shapes:
        only_head = all(is_head(k) for k in missing + unexpected + [s.split(":")[0] for s in shapes])
        hint = ("only the classifier head differs: set model.params.reset_head: true to keep it randomly initialised"
                if only_head and not reset_head else
                "the file was saved from another architecture, channel count or timm_kwargs")
        raise CheckpointError(
            f"model.params.weights {path} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"shape mismatches {shapes[:5]} ({len(missing)} / {len(unexpected)} / {len(shapes)} in all); {hint}"
        )
    with torch.no_grad():
        net.load_state_dict(state, strict=not reset_head)
    return net
