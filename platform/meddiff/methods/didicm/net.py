"""A small DiDiRN (DiDiCM's Discrete Diffusion Residual Network): a ResNet whose blocks are conditioned on the
diffusion step and the noisy label.

The paper keeps ResNet's image path and adds conditioning modules; here (a CPU-sized version of that idea):

    emb = MLP(sinusoidal(1000 t)) + Embedding(c_t)                         [B, emb_dim], t = k / K
    stem: conv3x3 (stride 1 or 2) -> GroupNorm -> SiLU (-> max-pool for ``stem_stride`` 4, ResNet's 1/4 stem)
    stage i (width w_i, stride 2 from the second stage on): ``blocks_per_stage`` residual blocks
        h = SiLU(FiLM(GN(conv3x3(x)), emb)); h = GN(conv3x3(h)); out = SiLU(h + shortcut(x))
        FiLM(h, emb) = h * (1 + scale(emb)) + shift(emb)
    head: global average pool, + Linear(emb), -> Linear -> logits over the clean label c_0       [B, C]

GroupNorm rather than BatchNorm, so a prediction does not depend on the batch it is evaluated in (the label chains of
one image are batched with other images' chains).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from meddiff.errors import ConfigError


@dataclass(frozen=True)
class DiDiRNConfig:
    """``model.params`` of ``model.name: didirn``: stage widths (stride 2 from the second stage on), residual blocks
    per stage, the step/label embedding width, GroupNorm groups, dropout, and the stem's stride (1 for 28-32 px, 4 for
    ResNet-like 256 px inputs)."""

    widths: tuple[int, ...] = (32, 64, 128)
    blocks_per_stage: int = 1
    emb_dim: int = 128
    norm_groups: int = 8
    dropout: float = 0.0
    stem_stride: int = 1


    def __post_init__(self) -> None:
        if not self.widths or any(w < 1 for w in self.widths):
            raise ConfigError(f"model.params.widths: expected positive stage widths, got {self.widths!r}")
        bad = [w for w in self.widths if w % self.norm_groups]
        if bad:
            raise ConfigError(f"model.params.widths: {bad} not divisible by norm_groups={self.norm_groups}")
        if self.blocks_per_stage < 1 or self.emb_dim < 2 or self.emb_dim % 2:
            raise ConfigError("model.params.blocks_per_stage / emb_dim: expected >= 1 and an even width >= 2, got "
                              f"{self.blocks_per_stage!r} / {self.emb_dim!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.params.dropout: expected a probability in [0, 1), got {self.dropout!r}")
        if self.stem_stride not in (1, 2, 4):
            raise ConfigError(f"model.params.stem_stride: expected 1, 2 or 4 (ResNet's stem: 4), got "
                              f"{self.stem_stride!r}")


def sinusoidal(t: torch.Tensor, dim: int) -> torch.Tensor:
    """[B] -> [B, dim] sin/cos features of 1000 t (the transformer/DDPM time embedding)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class FiLMBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, emb_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(groups, c_out)
        self.film = nn.Linear(emb_dim, 2 * c_out)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.short = (nn.Identity() if stride == 1 and c_in == c_out else
                      nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.GroupNorm(groups, c_out)))
        nn.init.zeros_(self.film.weight)  # start as a plain ResNet block
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm1(self.conv1(x)) * (1.0 + scale) + shift
        h = self.norm2(self.conv2(self.drop(nn.functional.silu(h))))
        return nn.functional.silu(h + self.short(x))


class DiDiRN(nn.Module):
    """(images [B, channels, S, S], noisy labels [B], t [B] in [0, 1]) -> logits [B, num_classes] of the clean label."""

    def __init__(self, cfg: DiDiRNConfig, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.emb_dim
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.label_emb = nn.Embedding(num_classes, d)
        w0 = cfg.widths[0]
        stem = [nn.Conv2d(in_channels, w0, 3, stride=min(cfg.stem_stride, 2), padding=1, bias=False),
                nn.GroupNorm(cfg.norm_groups, w0), nn.SiLU()]
        if cfg.stem_stride == 4:
            stem.append(nn.MaxPool2d(3, stride=2, padding=1))
        self.stem = nn.Sequential(*stem)
        blocks, c_in = [], w0
        for i, w in enumerate(cfg.widths):
            for b in range(cfg.blocks_per_stage):
                stride = 2 if i > 0 and b == 0 else 1
                blocks.append(FiLMBlock(c_in, w, stride, d, cfg.norm_groups, cfg.dropout))
                c_in = w
        self.blocks = nn.ModuleList(blocks)
        self.emb_to_feat = nn.Linear(d, c_in)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, images: torch.Tensor, labels: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(sinusoidal(t, self.cfg.emb_dim).to(images.dtype)) + self.label_emb(labels)
        emb = nn.functional.silu(emb)
        h = self.stem(images)
        for block in self.blocks:
            h = block(h, emb)
        return self.head(h.mean(dim=(2, 3)) + self.emb_to_feat(emb))
