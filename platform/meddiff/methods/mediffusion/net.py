"""The Mediffusion network: one diffusers UNet shared by the denoiser and a classifier head on its encoder features.

The UNet is unconditional (most training images carry no label, so the denoiser cannot be conditioned on the class).
Its encoder (``conv_in``, the down blocks, the mid block) runs once; the decoder (up blocks, output conv) turns it into
v_hat, and the head turns the spatially averaged output of every down block and of the mid block into class logits:

    feat = [mean_hw(down_1), ..., mean_hw(down_L), mean_hw(mid)]        [B, sum(block_out_channels) + last channels]
    logits = Linear(SiLU(Linear(LayerNorm(feat))))                     [B, num_classes]

Both read the same time embedding (the log-SNR or 1000 t, as the denoiser of ``meddiff.models.unet``). The steps follow
diffusers' ``UNet2DModel.forward`` (time embedding, conv_in, down, mid, up, post-process), split so the encoder can be
shared: ``forward(z, time, labels)`` is the denoiser interface of ``meddiff.models`` (labels ignored), so the
diffusion loss, the engine and the samplers accept it unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from meddiff.errors import ConfigError
from meddiff.models.unet import UNetConfig


class JointUNet(nn.Module):
    """Unconditional UNet denoiser + classifier head on its encoder.

    Args:
        cfg: the UNet sizes (``model.params``; ``conditioning`` must be ``embedding``: there is no class to attend to).
        in_channels / sample_size: the model-space input [in_channels, sample_size, sample_size].
        head_hidden / head_dropout: the head's hidden width and dropout.
    """

    def __init__(self, cfg: UNetConfig, in_channels: int, sample_size: int, num_classes: int, head_hidden: int = 256,
                 head_dropout: float = 0.0) -> None:
        super().__init__()
        from diffusers import UNet2DModel

        if cfg.conditioning != "embedding":
            raise ConfigError("model.params.conditioning: Mediffusion's denoiser is unconditional; use 'embedding' "
                              f"(no class embedding is created), got {cfg.conditioning!r}")
        levels = len(cfg.block_out_channels)
        if sample_size % (2 ** (levels - 1)):
            raise ConfigError(
                f"model: a {levels}-level UNet halves the input {levels - 1} times; the input side {sample_size} must "
                f"be divisible by {2 ** (levels - 1)} (change data.image_size or model.params.block_out_channels)"
            )
        self.net = UNet2DModel(
            sample_size=sample_size,
            in_channels=in_channels,
            out_channels=in_channels,
            down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention),
            up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention)),
            block_out_channels=tuple(cfg.block_out_channels),
            layers_per_block=cfg.layers_per_block,
            attention_head_dim=cfg.attention_head_dim,
            norm_num_groups=cfg.norm_num_groups,
            dropout=cfg.dropout,
            add_attention=any(cfg.attention),
        )
        feat = sum(cfg.block_out_channels) + cfg.block_out_channels[-1]
        self.head = nn.Sequential(nn.LayerNorm(feat), nn.Linear(feat, head_hidden), nn.SiLU(), nn.Dropout(head_dropout),
                                  nn.Linear(head_hidden, num_classes))
        self.num_classes = num_classes

    # -- the pieces of UNet2DModel.forward -------------------------------------------------------------------------
    def _embed(self, z: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """[B] time -> [B, D] time embedding (diffusers step 1)."""
        t_emb = self.net.time_proj(time.reshape(-1) * torch.ones(z.shape[0], dtype=time.dtype, device=z.device))
        return self.net.time_embedding(t_emb.to(dtype=z.dtype))

    def _encode(self, z: torch.Tensor, emb: torch.Tensor):
        """conv_in, down blocks, mid block (steps 2-4). Returns (h, skip tensors, pooled features [B, F])."""
        h = self.net.conv_in(z)
        skips = (h,)
        pooled = []
        for block in self.net.down_blocks:
            h, res = block(hidden_states=h, temb=emb)
            skips += res
            pooled.append(h.mean(dim=(2, 3)))
        if self.net.mid_block is not None:
            h = self.net.mid_block(h, emb)
        pooled.append(h.mean(dim=(2, 3)))
        return h, skips, torch.cat(pooled, dim=1)

    def _decode(self, h: torch.Tensor, skips: tuple[torch.Tensor, ...], emb: torch.Tensor) -> torch.Tensor:
        """up blocks and the output convolution (steps 5-6)."""
        for block in self.net.up_blocks:
            res, skips = skips[-len(block.resnets):], skips[: -len(block.resnets)]
            h = block(h, res, emb)
        h = self.net.conv_act(self.net.conv_norm_out(h))
        return self.net.conv_out(h)

    # -- public entry points -----------------------------------------------------------------------------------------
    def forward(self, z: torch.Tensor, time: torch.Tensor, labels: torch.Tensor | None = None,
                cls_z: torch.Tensor | None = None, cls_time: torch.Tensor | None = None):
        """The denoiser: v_hat [B, C, H, W] for z [B, C, H, W] at time [B] (``labels`` is accepted and ignored).

        With ``cls_z`` [L, C, H, W] / ``cls_time`` [L] (training): one encoder pass over both batches, the decoder on
        the first and the head on the second; returns (v_hat [B, C, H, W], logits [L, num_classes]). One forward call
        keeps DistributedDataParallel's single forward per backward.
        """
        if cls_z is None:
            emb = self._embed(z, time)
            h, skips, _ = self._encode(z, emb)
            return self._decode(h, skips, emb)
        n = z.shape[0]
        zz, tt = torch.cat([z, cls_z]), torch.cat([time.reshape(-1), cls_time.reshape(-1)])
        emb = self._embed(zz, tt)
        h, skips, feat = self._encode(zz, emb)
        v_hat = self._decode(h[:n], tuple(s[:n] for s in skips), emb[:n])
        return v_hat, self.head(feat[n:])

    def classify(self, z: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """Logits [B, num_classes] of z [B, C, H, W] at time [B] (the encoder only)."""
        _, _, feat = self._encode(z, self._embed(z, time))
        return self.head(feat)

    def denoise_and_classify(self, z: torch.Tensor, time: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(v_hat, logits) of the same z from one encoder pass (classifier guidance)."""
        emb = self._embed(z, time)
        h, skips, feat = self._encode(z, emb)
        return self._decode(h, skips, emb), self.head(feat)
