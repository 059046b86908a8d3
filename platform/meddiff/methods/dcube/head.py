"""D-Cube's light classifier over the selected hyper-features.

The features of the selected layers are concatenated [B, D_total] and standardised with the training split's
per-dimension mean and standard deviation (stored as buffers, so a bundle is self-contained). Then
- ``hidden > 0`` (default): h = GELU(sum_l W_l f_l + b), one projection per layer (together: one linear layer over the
  concatenation), dropout, logits = W_o h + b_o -- the paper's "two fully connected layers" at the end of its head;
  the per-layer projection W_l f_mid is the mid-block embedding the contrastive loss acts on;
- ``hidden == 0``: logits = W f + b (a linear probe).
The paper's head also has 3x3 / 5x5 convolutions over the unpooled feature maps and ImageNet ResNet "sub-features";
both are left out here (the features are pooled, see the package docstring).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class DCubeHead(nn.Module):
    """[B, sum(dims)] selected features (in ``layers`` order) -> logits [B, num_classes]."""

    def __init__(self, layers: Sequence[str], dims: Sequence[int], num_classes: int, hidden: int = 256,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if len(layers) != len(dims) or not layers:
            raise ValueError(f"DCubeHead: needs one width per layer, got layers {list(layers)} and dims {list(dims)}")
        self.layers = tuple(layers)
        self.dims = tuple(int(d) for d in dims)
        self.hidden = int(hidden)
        total = sum(self.dims)
        self.register_buffer("mean", torch.zeros(total))
        self.register_buffer("std", torch.ones(total))
        if self.hidden > 0:
            self.proj = nn.ModuleList(nn.Linear(d, self.hidden) for d in self.dims)
            self.act = nn.GELU()
            self.drop = nn.Dropout(dropout)
            self.out = nn.Linear(self.hidden, num_classes)
        else:
            self.out = nn.Linear(total, num_classes)

    @torch.no_grad()
    def set_standardisation(self, features: torch.Tensor) -> None:
        """Mean and standard deviation per dimension of the training features [N, D_total]."""
        self.mean.copy_(features.mean(dim=0))
        self.std.copy_(features.std(dim=0).clamp(min=1e-6))

    def split(self, features: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(features, self.dims, dim=1))

    def forward(self, features: torch.Tensor, embed: int | None = None):
        """logits [B, C]; with ``embed`` = a layer index also that layer's projection [B, hidden] (pre-activation)."""
        x = (features - self.mean) / self.std
        if self.hidden == 0:
            return (self.out(x), None) if embed is not None else self.out(x)
        parts = [p(f) for p, f in zip(self.proj, self.split(x))]
        logits = self.out(self.drop(self.act(torch.stack(parts).sum(dim=0))))
        return (logits, parts[embed]) if embed is not None else logits
