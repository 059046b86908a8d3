"""DiT denoiser (Peebles & Xie) from diffusers' ``DiTTransformer2DModel``; the class enters through adaptive layer norm
(adaLN-Zero): a label embedding added to the time embedding scales and shifts every block.

diffusers' label embedding drops labels at random in training mode (its own CFG dropout, unseeded); meddiff does the
dropout itself, seeded, by passing the null label ``num_classes``, so the built-in dropout is switched off after
construction. The embedding table keeps its extra null row (index ``num_classes``).
Paper (Appendix B.4): DiT-B/4 = 12 layers, 12 heads x 64 dims, patch 4, on 12 x 128 x 128 wavelets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from meddiff.errors import ConfigError


@dataclass(frozen=True)
class DiTConfig:
    num_layers: int = 4
    num_attention_heads: int = 4
    attention_head_dim: int = 32
    patch_size: int = 2
    dropout: float = 0.0


class DiT(nn.Module):
    def __init__(self, cfg: DiTConfig, in_channels: int, sample_size: int, num_classes: int) -> None:
        super().__init__()
        from diffusers import DiTTransformer2DModel

        if sample_size % cfg.patch_size:
            raise ConfigError(f"model.params.patch_size: {cfg.patch_size} does not divide the input side {sample_size}")
        self.net = DiTTransformer2DModel(
            num_attention_heads=cfg.num_attention_heads,
            attention_head_dim=cfg.attention_head_dim,
            in_channels=in_channels,
            out_channels=in_channels,
            num_layers=cfg.num_layers,
            dropout=cfg.dropout,
            sample_size=sample_size,
            patch_size=cfg.patch_size,
            num_embeds_ada_norm=num_classes,
        )
        for module in self.net.modules():
            if hasattr(module, "dropout_prob") and hasattr(module, "embedding_table"):
                module.dropout_prob = 0.0  # meddiff's seeded CFG dropout is the only one

    def forward(self, z: torch.Tensor, time: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.net(z, timestep=time, class_labels=labels).sample


def build_dit(cfg: DiTConfig, in_channels: int, sample_size: int, num_classes: int) -> nn.Module:
    return DiT(cfg, in_channels, sample_size, num_classes)
