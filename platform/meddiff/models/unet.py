"""Class-conditional UNet denoiser built from diffusers' UNet blocks (ADM-style, as in the paper).

How the class enters, by ``conditioning``:
- ``cross_attention`` (the paper, Appendix B.3): a learned embedding table (``nn.Embedding(num_classes + 1, dim)``, the
  last row is the null class of classifier-free guidance) gives a length-1 context sequence [B, 1, dim] that the
  cross-attention layers of the levels listed in ``attention`` attend to (diffusers ``UNet2DConditionModel``).
  Paper: cross_attention_dim 512, cross-attention at 16 x 16 (and in the mid block, always cross-attention here).
- ``embedding`` (cheaper, for tiny CPU models): the class embedding is added to the time embedding and reaches every
  ResNet block through its scale/shift (diffusers ``UNet2DModel`` with ``num_class_embeds``); ``attention`` levels get
  self-attention.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from meddiff.errors import ConfigError


@dataclass(frozen=True)
class UNetConfig:
    """UNet sizes. Paper (A100, 12 x 128 x 128 wavelets): block_out_channels (128, 128, 256, 512, 1024), i.e. 128 x
    (1, 1, 2, 4, 8); layers_per_block 2; attention (False, False, False, True, False): the 16 x 16 level (+ the mid
    block at 8 x 8); cross_attention_dim 512."""

    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    attention: tuple[bool, ...] = (False, False, True)
    conditioning: str = "embedding"
    cross_attention_dim: int = 512
    attention_head_dim: int = 8
    norm_num_groups: int = 8
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if len(self.attention) != len(self.block_out_channels):
            raise ConfigError(
                f"model.params.attention: needs one flag per level ({len(self.block_out_channels)}), got {self.attention}"
            )
        if self.conditioning not in ("embedding", "cross_attention"):
            raise ConfigError(f"model.params.conditioning: expected 'embedding' or 'cross_attention', got {self.conditioning!r}")
        for ch in self.block_out_channels:
            if ch % self.norm_num_groups:
                raise ConfigError(
                    f"model.params.block_out_channels: {ch} is not divisible by norm_num_groups={self.norm_num_groups}"
                )


class ClassEmbeddingUNet(nn.Module):
    """diffusers UNet2DModel; the class (null = num_classes) is added to the time embedding."""

    def __init__(self, cfg: UNetConfig, in_channels: int, sample_size: int, num_classes: int) -> None:
        super().__init__()
        from diffusers import UNet2DModel

        down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention)
        up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention))
        self.net = UNet2DModel(
            sample_size=sample_size,
            in_channels=in_channels,
            out_channels=in_channels,
            down_block_types=down,
            up_block_types=up,
            block_out_channels=tuple(cfg.block_out_channels),
            layers_per_block=cfg.layers_per_block,
            attention_head_dim=cfg.attention_head_dim,
            norm_num_groups=cfg.norm_num_groups,
            dropout=cfg.dropout,
            add_attention=any(cfg.attention),
            num_class_embeds=num_classes + 1,
        )

    def forward(self, z: torch.Tensor, time: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.net(z, time, class_labels=labels).sample


class CrossAttentionUNet(nn.Module):
    """diffusers UNet2DConditionModel; the class is a learned length-1 cross-attention context (the paper's design)."""

    def __init__(self, cfg: UNetConfig, in_channels: int, sample_size: int, num_classes: int) -> None:
        super().__init__()
        from diffusers import UNet2DConditionModel

        down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention)
        up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention))
        self.class_context = nn.Embedding(num_classes + 1, cfg.cross_attention_dim)
        self.net = UNet2DConditionModel(
            sample_size=sample_size,
            in_channels=in_channels,
            out_channels=in_channels,
            down_block_types=down,
            up_block_types=up,
            mid_block_type="UNetMidBlock2DCrossAttn",
            block_out_channels=tuple(cfg.block_out_channels),
            layers_per_block=cfg.layers_per_block,
            attention_head_dim=cfg.attention_head_dim,
            norm_num_groups=cfg.norm_num_groups,
            dropout=cfg.dropout,
            cross_attention_dim=cfg.cross_attention_dim,
        )

    def forward(self, z: torch.Tensor, time: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        context = self.class_context(labels)[:, None, :]  # [B, 1, D]
        return self.net(z, time, encoder_hidden_states=context).sample


def build_unet(cfg: UNetConfig, in_channels: int, sample_size: int, num_classes: int) -> nn.Module:
    levels = len(cfg.block_out_channels)
    if sample_size % (2 ** (levels - 1)):
        raise ConfigError(
            f"model: a {levels}-level UNet halves the input {levels - 1} times; the input side {sample_size} must be "
            f"divisible by {2 ** (levels - 1)} (change data.image_size or model.params.block_out_channels)"
        )
    cls = CrossAttentionUNet if cfg.conditioning == "cross_attention" else ClassEmbeddingUNet
    return cls(cfg, in_channels, sample_size, num_classes)
