"""Every network a config's method trains or scores, at full size, built through the method registry.

``full_size(cfg)`` asks the method's registry entry (``Method.sizing``, interface ``meddiff.methods.sizing``) for its
networks; nothing is read from the data set and no weights are loaded: on the ``meta`` device (the default) a network
costs no memory, so the paper's 385.8 M-parameter UNet is built in a second.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from meddiff.config import ExperimentConfig, load_config
from meddiff.errors import ConfigError
from meddiff.methods import get_method, resolve
from meddiff.methods.sizing import SizedNetwork


def num_classes(cfg: ExperimentConfig) -> int:
    """The number of classes the config's data source defines, without reading the data: the source module's
    ``CLASS_NAMES`` (CheXpert, ISIC), else ``data.params.label_names`` / ``class_names``; otherwise a ConfigError."""
    from meddiff.data.sources import SOURCES

    if cfg.data.source in SOURCES:
        module = importlib.import_module(SOURCES[cfg.data.source][1].__module__)
        if getattr(module, "CLASS_NAMES", None):
            return len(module.CLASS_NAMES)
    params = dict(cfg.data.params or {})
    for key in ("label_names", "class_names"):
        names = params.get(key)
        if isinstance(names, (list, tuple, dict)) and names:
            return len(set(names.values()) if isinstance(names, dict) else names)
    raise ConfigError(f"data.source {cfg.data.source!r}: the number of classes is only known from the data; give "
                      f"data.params.class_names (or label_names) to size the model without it")


def _config(cfg: ExperimentConfig | str | Path) -> tuple[ExperimentConfig, Path | None]:
    if isinstance(cfg, ExperimentConfig):
        return cfg, None
    return load_config(cfg), Path(cfg).parent


def full_size(cfg: ExperimentConfig | str | Path, device: torch.device | str = "meta",
              config_dir: Path | None = None) -> dict[str, SizedNetwork]:
    """{name: SizedNetwork} of every network the config's method trains or scores (a config file's folder is the
    ``config_dir`` by default: D-Cube reads its frozen model's config there when the checkpoint is not present)."""
    cfg, folder = _config(cfg)
    method = get_method(cfg.method)
    if method.sizing is None:
        raise ConfigError(f"method: {cfg.method!r} declares no full-size networks (its registry entry has no "
                          f"`sizing`); see meddiff.methods.sizing")
    return resolve(method.sizing)(cfg, num_classes(cfg), device, config_dir or folder)


def full_size_networks(cfg: ExperimentConfig | str | Path, device: torch.device | str = "meta",
                       config_dir: Path | None = None) -> dict[str, nn.Module]:
    """{name: network} at full size on ``device`` (``meta``: shapes only)."""
    return {name: sized.module for name, sized in full_size(cfg, device, config_dir).items()}


def example_inputs(cfg: ExperimentConfig | str | Path, name: str, batch: int, device: torch.device | str = "meta",
                   config_dir: Path | None = None) -> tuple[torch.Tensor, ...]:
    """The tensors one forward of network ``name`` takes for ``batch`` images (``network(*inputs)``)."""
    sized = full_size(cfg, "meta", config_dir)
    if name not in sized:
        raise ConfigError(f"network {name!r}: the config's method builds {sorted(sized)}")
    return sized[name].inputs(batch, device)
