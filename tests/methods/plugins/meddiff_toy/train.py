"""The toy method's model and training step (on the shared loop)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from meddiff.bundle import load_weights, read_bundle
from meddiff.errors import CheckpointError
from meddiff.models.baseline_model import BaselineModel
from meddiff.train.loop import run_loop, seeded_init, setup_run

KIND = "toy"
POOL = 8


def network(channels: int, num_classes: int) -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(POOL), nn.Flatten(), nn.Linear(channels * POOL * POOL, num_classes))


def train_toy(cfg, context=None) -> Path | None:
    setup = setup_run(cfg, context, KIND)
    names = setup.manifest.class_names
    with seeded_init(cfg.train.seed):
        net = network(cfg.data.channels, len(names)).to(setup.device)

    def step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int) -> dict:
        return {"loss": F.cross_entropy(model(x), y)}

    metadata = {"kind": KIND, "class_names": list(names), "image_size": cfg.data.image_size,
                "channels": cfg.data.channels, "model": {"name": "toy-logreg"}}
    return run_loop(setup, net, step, metadata, loss_label="cross-entropy")


def load_toy(path, device="cpu") -> BaselineModel:
    bundle = read_bundle(path)
    meta = bundle.metadata
    if meta.get("kind") != KIND:
        raise CheckpointError(f"{bundle.path}: is a {meta.get('kind')!r} checkpoint, not a {KIND} one")
    net = network(int(meta["channels"]), len(meta["class_names"]))
    load_weights(bundle, net)
    net.to(device).eval()
    return BaselineModel(net, None, tuple(meta["class_names"]), int(meta["image_size"]), int(meta["channels"]),
                         bundle.model_id, meta)
