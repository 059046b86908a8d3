"""Fine-tuned Stable Diffusion at full size (``meddiff.methods.sizing``): the UNet (fine-tuned), the VAE encoder
(frozen: it encodes each training image per step and each scored image once) and the text encoder (frozen: the class
prompts are encoded once per run).

Architectures come from the pretrained folder's ``config.json`` files when it is on this machine; otherwise from the
published configuration of stable-diffusion-2-base (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent
Diffusion Models"; the released v2-base model's unet/vae/text_encoder config.json), said in the note. Only the VAE's
encoder and quant_conv are sized: training and scoring never decode. With ``gradient_checkpointing`` the UNet keeps
far fewer activations in training than the saved-for-backward bytes measured here (no checkpointing): an upper bound.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from meddiff.config import ExperimentConfig
from meddiff.methods.sd.model import resolve_pretrained, sd_options
from meddiff.methods.sizing import SizedNetwork

# stable-diffusion-2-base (the paper's SD model), as released: unet/, vae/ and text_encoder/ config.json
SD2_BASE_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True, norm_num_groups=32,
    flip_sin_to_cos=True, freq_shift=0, act_fn="silu",
)
SD2_BASE_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
    act_fn="silu", sample_size=512, scaling_factor=0.18215,
)
SD2_BASE_TEXT = dict(
    vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
    max_position_embeddings=77, hidden_act="gelu", projection_dim=512, layer_norm_eps=1e-5,
)


class VAEEncoder(nn.Module):
    """pixels [B, 3, S, S] -> posterior moments [B, 2 x latent channels, S / 8, S / 8] (what ``SDModel.encode`` runs)."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.encoder, self.quant_conv = vae.encoder, vae.quant_conv

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        h = self.encoder(pixels)
        return self.quant_conv(h) if self.quant_conv is not None else h


def _configs(folder: Path) -> tuple[dict, dict, dict, str]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig

    if all((folder / sub / "config.json").is_file() for sub in ("unet", "vae", "text_encoder")):
        return (dict(UNet2DConditionModel.load_config(folder, subfolder="unet")),
                dict(AutoencoderKL.load_config(folder, subfolder="vae")),
                CLIPTextConfig.from_pretrained(folder, subfolder="text_encoder").to_dict(),
                f"architecture from {folder}")
    return (SD2_BASE_UNET, SD2_BASE_VAE, SD2_BASE_TEXT,
            f"pretrained folder {folder} not on this machine: stable-diffusion-2-base architecture, random weights")


def full_size(cfg: ExperimentConfig, num_classes: int, device, config_dir: Path | None = None) -> dict[str, SizedNetwork]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    opts = sd_options(cfg.method_options)
    ref = resolve_pretrained(opts.pretrained)
    unet_cfg, vae_cfg, text_cfg, source = _configs(ref.path)
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(unet_cfg)
        vae = AutoencoderKL.from_config(vae_cfg)
        text = CLIPTextModel(CLIPTextConfig(**text_cfg))
    vae_encoder = VAEEncoder(vae).requires_grad_(False)
    text.requires_grad_(False)
    s = cfg.data.image_size
    down = 2 ** (len(vae.config.block_out_channels) - 1)
    latent = (int(vae.config.latent_channels), s // down, s // down)
    context = (int(text.config.max_position_embeddings), int(unet.config.cross_attention_dim))

    def unet_inputs(batch: int, dev) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch, *latent, device=dev), torch.zeros(batch, dtype=torch.long, device=dev),
                torch.randn(batch, *context, device=dev))

    def vae_inputs(batch: int, dev) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch, 3, s, s, device=dev),)

    def text_inputs(batch: int, dev) -> tuple[torch.Tensor, ...]:
        return (torch.zeros(batch, context[0], dtype=torch.long, device=dev),)

    return {
        "unet": SizedNetwork(unet, unet_inputs, trained=True, train_forwards=1,
                             score_forwards=cfg.score.n_draws * num_classes, ema=opts.ema, note=source),
        "vae_encoder": SizedNetwork(vae_encoder, vae_inputs, trained=False, train_forwards=1, score_forwards=1,
                                    note=source),
        "text_encoder": SizedNetwork(text, text_inputs, trained=False, train_forwards=0, score_forwards=0,
                                     note=f"{source}; the class prompts are encoded once per run"),
    }
