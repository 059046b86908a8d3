"""A tiny, randomly initialised Stable-Diffusion-style model folder, for tests and CPU presets (no hub access here).

``build_tiny_pipeline(folder, seed)`` writes what ``StableDiffusionPipeline.save_pretrained`` writes for a real model:

    folder/model_index.json
    folder/unet/          UNet2DConditionModel, latent 4 channels, blocks (32, 64), cross-attention dim 32 (0.8 M)
    folder/vae/           AutoencoderKL, 4 blocks: downsampling by 8 as SD's (32 px -> 4 x 4 latents, 64 px -> 8 x 8)
    folder/text_encoder/  CLIPTextModel, width 32, 2 layers, 77 positions
    folder/tokenizer/     CLIPTokenizer built offline from a byte-level vocab.json (every byte alone and with the
                          end-of-word mark "</w>", plus <|startoftext|>, <|endoftext|>) and an empty merges.txt, so
                          prompts are tokenised character by character (a prompt holds at most 75 characters + 2 marks)
    folder/scheduler/     DDPMScheduler as SD 2 base: 1000 steps, scaled-linear betas 0.00085-0.012, epsilon-prediction
    folder/meddiff_tiny.json   {"seed": ...}: marks the folder as built here

The random VAE is made to behave like a trained one where the classifier depends on it: the posterior is narrow
(log-variance bias -12, so ``latent_dist.sample()`` is close to its mean; a random VAE's std of ~1 would drown the
image), and, like SD's 0.18215, the latent shift and scaling factor are calibrated so latents are about zero-mean and
unit-variance per channel, here on deterministic synthetic chest phantoms (``meddiff.data.phantoms``) at 32 px.
The weights are random: any accuracy above chance comes from fine-tuning the UNet on the task, not from pretraining.
The same seed gives the same folder on the same torch build (the bundle records a fingerprint of the frozen parts).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from meddiff.errors import ConfigError

TINY_MARKER = "meddiff_tiny.json"
TINY_VERSION = 1
CALIBRATION_SIZE = 32
CALIBRATION_IMAGES = 64
LOGVAR_BIAS = -12.0


def byte_level_vocab() -> dict[str, int]:
    """CLIP's byte-to-unicode alphabet (GPT-2 byte-level BPE), each symbol alone and with "</w>", plus the two marks."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    codes, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            codes.append(256 + extra)
            extra += 1
    symbols = [chr(c) for c in codes]
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": 256 + i for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab


def _tokenizer(tmp: Path):
    from transformers import CLIPTokenizer

    vocab_dir = tmp / "tokenizer_files"
    vocab_dir.mkdir()
    (vocab_dir / "vocab.json").write_text(json.dumps(byte_level_vocab()))
    (vocab_dir / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer.from_pretrained(str(vocab_dir), model_max_length=77), vocab_dir


def _text_encoder(vocab: dict[str, int]):
    from transformers import CLIPTextConfig, CLIPTextModel

    eos = vocab["<|endoftext|>"]
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, projection_dim=32, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"], eos_token_id=eos,
        pad_token_id=eos,
    ))


def _unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=4, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    )


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, block_out_channels=(16, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=8,
        sample_size=CALIBRATION_SIZE,
    )


def _scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         prediction_type="epsilon", clip_sample=False, steps_offset=1)


@torch.no_grad()
def calibrate_vae(vae) -> None:
    """Narrow the posterior and set per-channel shift + scaling factor on phantom images (in place).

    The encoder's last 1x1 convolution (``quant_conv``) yields [mean (4), log-variance (4)]; its bias takes the
    per-channel mean off and pins the log-variance; ``scaling_factor`` becomes 1 / std of the centred latents.
    """
    from meddiff.data.phantoms import render_phantom

    images = np.stack([render_phantom(0, i, i % 2, CALIBRATION_SIZE) for i in range(CALIBRATION_IMAGES)])
    x = torch.from_numpy(images).float().div(127.5).sub(1.0)[:, None].repeat(1, 3, 1, 1)
    vae.eval()
    latent_channels = vae.config.latent_channels
    mean = vae.encode(x).latent_dist.mean
    vae.quant_conv.bias[:latent_channels] -= mean.mean(dim=(0, 2, 3))
    vae.quant_conv.bias[latent_channels:] = LOGVAR_BIAS
    centred = vae.encode(x).latent_dist.mean
    vae.register_to_config(scaling_factor=float(1.0 / centred.std()))


def build_tiny_pipeline(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny random SD folder at ``folder`` (atomically); an existing tiny folder of the same seed is kept.

    Raises ConfigError when ``folder`` exists but was built with another seed or is not a tiny folder.
    """
    from diffusers import StableDiffusionPipeline

    folder = Path(folder).expanduser().absolute()
    if folder.exists():
        check_tiny_folder(folder, seed)
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=folder.parent))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            tokenizer, vocab_dir = _tokenizer(tmp)
            text_encoder = _text_encoder(byte_level_vocab())
            unet = _unet()
            vae = _vae()
        calibrate_vae(vae)
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=_scheduler(), safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
        out = tmp / "pipeline"
        from meddiff.methods.sd.model import quiet_loading

        with quiet_loading():
            pipe.save_pretrained(out)
        # the files the tokenizer was built from, beside the tokenizer.json transformers writes
        for name in ("vocab.json", "merges.txt"):
            shutil.copy(vocab_dir / name, out / "tokenizer" / name)
        (out / TINY_MARKER).write_text(json.dumps({"seed": int(seed), "version": TINY_VERSION}))
        try:
            os.rename(out, folder)
        except OSError:
            if not (folder / TINY_MARKER).is_file():  # not another process that built it at the same time
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    check_tiny_folder(folder, seed)
    return folder


def check_tiny_folder(folder: Path, seed: int) -> None:
    marker = folder / TINY_MARKER
    if not marker.is_file():
        raise ConfigError(
            f"method_options.pretrained: tiny:{folder} exists but is not a tiny pipeline built by meddiff (no "
            f"{TINY_MARKER}); point tiny: at a new folder, or drop the tiny: prefix to use the folder as a "
            f"pretrained model"
        )
    info = json.loads(marker.read_text())
    if info.get("seed") != seed or info.get("version") != TINY_VERSION:
        raise ConfigError(
            f"method_options.pretrained: {folder} holds a tiny pipeline of seed {info.get('seed')} (version "
            f"{info.get('version')}), but seed {seed} (version {TINY_VERSION}) was asked for; set "
            f"method_options.tiny_seed: {info.get('seed')} or use another folder"
        )
