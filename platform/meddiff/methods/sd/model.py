"""The fine-tuned Stable Diffusion classifier's model: a trainable UNet, the frozen VAE and text encoder of a local
pretrained folder, one prompt per class, and the DDPM noise table.

``SDModel`` is what ``meddiff.methods.sd.train`` fine-tunes and what ``SDPredictor`` scores with. Pixels are [-1, 1] images
[B, channels, image_size, image_size] from meddiff's ImageDecoder; grayscale is repeated to the VAE's 3 channels, and
the VAE maps them to latents [B, 4, image_size / 8, image_size / 8] = (latent_dist - shift) * scaling_factor (SD's
convention; the shift is 0 unless the VAE config sets ``shift_factor``). Prompts are encoded once by the frozen text
encoder into ``prompt_embeds`` [num_classes, 77, D]; class c conditions the UNet through cross-attention on row c.

The pretrained folder (``method_options.pretrained``) is a ``StableDiffusionPipeline.save_pretrained`` folder or any
folder with ``unet/ vae/ text_encoder/ tokenizer/ scheduler/`` subfolders; ``${MEDDIFF_MODELS}`` in it expands to
``models_root()``, and ``tiny:<folder>`` builds a tiny random one there when it is missing (``meddiff.methods.sd.tiny``). Only local
files are read (no hub access).

A checkpoint bundle holds the fine-tuned UNet weights and its config; the frozen VAE, text encoder and tokenizer stay
referenced by the pretrained path, and metadata.json records a sha256 fingerprint of their files, so scoring with a
changed or different folder is an error rather than silently wrong latents.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from meddiff.config import from_dict
from meddiff.errors import CheckpointError, ConfigError
from meddiff.methods.sd.engine import DiscreteLogSNR
from meddiff.provenance import file_sha256
from meddiff.bundle import load_weights, read_bundle

KIND = "sd"
TINY_PREFIX = "tiny:"
SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
FROZEN_SUBFOLDERS = ("vae", "text_encoder", "tokenizer")
PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass(frozen=True)
class SDOptions:
    """``method_options`` of ``method: sd``.

    pretrained (required): local folder of a diffusers SD model, or ``tiny:<folder>`` (built there when missing,
        seed ``tiny_seed``); ``${MEDDIFF_MODELS}`` expands to $MEDDIFF_MODELS or ~/.cache/meddiff/models. Use
        absolute paths (or ${MEDDIFF_MODELS}) for Ray runs: workers may run in another directory.
    prompts: class name -> prompt (paper: "a benign skin lesion", "a frontal chest xray of a sick patient with pleural
        effusion"); classes left out get ``prompt_template`` with their name (underscores as spaces).
    latent: what training diffuses: ``sample`` (a draw of the VAE posterior, as the Hugging Face training script) or
        ``mean``. Scoring always uses the posterior mean (Li et al.).
    ema: keep an EMA of the UNet (train.ema_beta / ema_warmup / ema_every) and save it for inference.
    gradient_checkpointing: trade compute for memory in the UNet (large models at 256 px and above).
    """

    pretrained: str
    prompts: Mapping[str, str] = field(default_factory=dict)
    prompt_template: str = "a medical image showing {name}"
    tiny_seed: int = 0
    latent: str = "sample"
    ema: bool = True
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.latent not in ("sample", "mean"):
            raise ConfigError(f"method_options.latent: expected 'sample' or 'mean', got {self.latent!r}")
        if "{name}" not in self.prompt_template:
            raise ConfigError(f"method_options.prompt_template: must contain {{name}}, got {self.prompt_template!r}")
        if not self.pretrained.strip():
            raise ConfigError("method_options.pretrained: empty; give a local SD folder or tiny:<folder>")


def sd_options(method_options: Mapping[str, Any] | None) -> SDOptions:
    if isinstance(method_options, Mapping) and "pretrained" not in method_options:
        raise ConfigError("method_options.pretrained: required for method sd: a local Stable Diffusion folder "
                          "(${MEDDIFF_MODELS}/stable-diffusion-2-base) or tiny:<folder> for a tiny random one")
    return from_dict(SDOptions, method_options or {}, "method_options")


def models_root() -> Path:
    """$MEDDIFF_MODELS, else ~/.cache/meddiff/models."""
    env = os.environ.get("MEDDIFF_MODELS")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "meddiff" / "models"


@dataclass(frozen=True)
class PretrainedRef:
    spec: str  # as written in the config
    path: Path  # absolute folder
    tiny: bool


def resolve_pretrained(spec: str) -> PretrainedRef:
    """Expand ``${MEDDIFF_MODELS}`` and ``~``, strip ``tiny:``; relative paths are taken from the current directory."""
    tiny = spec.startswith(TINY_PREFIX)
    text = spec[len(TINY_PREFIX):] if tiny else spec
    text = text.replace("${MEDDIFF_MODELS}", str(models_root()))
    if "${" in text or text.startswith("$"):
        raise ConfigError(f"method_options.pretrained: {spec!r} has an unknown ${{...}} variable; only "
                          f"${{MEDDIFF_MODELS}} is expanded")
    return PretrainedRef(spec=spec, path=Path(text).expanduser().absolute(), tiny=tiny)


def ensure_pretrained(ref: PretrainedRef, tiny_seed: int = 0) -> Path:
    """The folder, built first for ``tiny:`` when missing; a missing folder or subfolder is an error."""
    if ref.tiny:
        from meddiff.methods.sd.tiny import build_tiny_pipeline

        build_tiny_pipeline(ref.path, tiny_seed)
    if not ref.path.is_dir():
        raise ConfigError(
            f"method_options.pretrained: {ref.path} (from {ref.spec!r}) does not exist; download or copy a Stable "
            f"Diffusion folder there (e.g. StableDiffusionPipeline.save_pretrained), or use tiny:<folder> for a tiny "
            f"random one"
        )
    missing = [s for s in SUBFOLDERS if not (ref.path / s).is_dir()]
    if missing:
        raise ConfigError(f"method_options.pretrained: {ref.path} has no {missing} subfolder(s); expected a diffusers "
                          f"Stable Diffusion folder with {list(SUBFOLDERS)}")
    return ref.path


def frozen_fingerprint(folder: Path) -> str:
    """sha256 over the files of the frozen parts (vae/, text_encoder/, tokenizer/): names and contents."""
    h = hashlib.sha256()
    for sub in FROZEN_SUBFOLDERS:
        for path in sorted(p for p in (folder / sub).rglob("*") if p.is_file()):
            h.update(f"{path.relative_to(folder).as_posix()}\x00{file_sha256(path)}\n".encode())
    return h.hexdigest()


@contextmanager
def quiet_loading():
    """Hide the libraries' per-load progress bars (they flood Ray worker logs); restore them after."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    d_on, t_on = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if d_on:
            dlog.enable_progress_bar()
        if t_on:
            tlog.enable_progress_bar()


def class_prompts(class_names: Sequence[str], opts: SDOptions) -> tuple[str, ...]:
    """One prompt per class, in class order; a prompt for an unknown class name is an error (a typo)."""
    unknown = sorted(set(opts.prompts) - set(class_names))
    if unknown:
        raise ConfigError(f"method_options.prompts: {unknown} are not class names of this data set {list(class_names)}")
    default = opts.prompt_template
    return tuple(opts.prompts.get(name, default.format(name=name.replace("_", " "))) for name in class_names)


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder: nn.Module, prompts: Sequence[str], device: torch.device) -> torch.Tensor:
    """[num_classes, max_length, D] last hidden states of the text encoder (as SD pipelines condition the UNet).

    Raises ConfigError when two prompts tokenise identically (e.g. equal after truncation to the tokenizer's length).
    """
    tokens = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                       return_tensors="pt")
    ids = tokens.input_ids
    for i in range(len(prompts)):
        for j in range(i):
            if torch.equal(ids[i], ids[j]):
                raise ConfigError(f"method_options.prompts: {prompts[j]!r} and {prompts[i]!r} are the same after "
                                  f"tokenisation (max {tokenizer.model_max_length} tokens); make them differ earlier")
    mask = tokens.attention_mask.to(device) if getattr(text_encoder.config, "use_attention_mask", False) else None
    return text_encoder(ids.to(device), attention_mask=mask)[0].float()


@dataclass
class SDModel:
    """The UNet, the frozen VAE, the class prompt embeddings and the noise table. Shapes: latents [B, *latent_shape]."""

    unet: nn.Module
    vae: nn.Module
    prompt_embeds: torch.Tensor  # [num_classes, L, D]
    schedule: DiscreteLogSNR
    scheduler_config: dict[str, Any]
    prediction_type: str
    class_names: tuple[str, ...]
    prompts: tuple[str, ...]
    image_size: int
    channels: int
    pretrained: PretrainedRef
    tiny_seed: int
    frozen_sha256: str
    model_id: str = "untrained"
    metadata: dict[str, Any] | None = None
    null_embed: torch.Tensor | None = None  # [L, D] the empty prompt "" (classifier-free guidance), when asked for

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = self.image_size // self.downsample
        return (int(self.vae.config.latent_channels), side, side)

    @property
    def latent_scale(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def latent_shift(self) -> float:
        return float(getattr(self.vae.config, "shift_factor", None) or 0.0)

    def to(self, device: torch.device) -> "SDModel":
        self.unet.to(device)
        self.vae.to(device)
        self.prompt_embeds = self.prompt_embeds.to(device)
        if self.null_embed is not None:
            self.null_embed = self.null_embed.to(device)
        return self

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor, mode: str = "mean",
               generator: torch.Generator | None = None) -> torch.Tensor:
        """[B, channels, S, S] in [-1, 1] -> latents [B, *latent_shape] float32 (posterior ``mean`` or ``sample``)."""
        if pixels.shape[1] == 1:
            pixels = pixels.repeat(1, 3, 1, 1)
        dist = self.vae.encode(pixels.to(self.vae.dtype)).latent_dist
        z = dist.mean if mode == "mean" else dist.sample(generator=generator)
        return ((z.float() - self.latent_shift) * self.latent_scale).contiguous()

    def metadata_fields(self) -> dict[str, Any]:
        """What a bundle needs to rebuild this model (the UNet from its config; the frozen parts from the folder)."""
        return {
            "kind": KIND,
            "model": {"name": KIND, "params": {"pretrained": self.pretrained.spec}},
            "class_names": list(self.class_names),
            "image_size": self.image_size,
            "channels": self.channels,
            "prompts": list(self.prompts),
            "pretrained": self.pretrained.spec,
            "pretrained_path": str(self.pretrained.path),
            "tiny_seed": self.tiny_seed,
            "frozen_sha256": self.frozen_sha256,
            "unet_config": _json_config(self.unet.config),
            "scheduler_config": self.scheduler_config,
            "prediction_type": self.prediction_type,
            "latent_shape": list(self.latent_shape),
            "latent_scale": self.latent_scale,
            "latent_shift": self.latent_shift,
        }


def _json_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A diffusers config as plain JSON, without its private entries (_name_or_path, _diffusers_version, ...)."""
    return json.loads(json.dumps({k: v for k, v in dict(config).items() if not k.startswith("_")}, default=list))


def _low_cpu_mem() -> bool:
    """diffusers skips the random init of large weights only with accelerate; without it, ask for the plain load
    rather than get its warning on every load."""
    return importlib.util.find_spec("accelerate") is not None


def _frozen_parts(folder: Path, device: torch.device | str):
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    with quiet_loading():
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", low_cpu_mem_usage=_low_cpu_mem())
        text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")
        tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    for module in (vae, text_encoder):
        module.to(device).eval().requires_grad_(False)
    return vae, text_encoder, tokenizer


def _schedule(scheduler_config: Mapping[str, Any]) -> tuple[Any, DiscreteLogSNR, str]:
    """The DDPM scheduler of the model (whatever scheduler class the folder names, its betas define DDPM's table)."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_config(dict(scheduler_config))
    prediction_type = scheduler.config.prediction_type
    if prediction_type not in PREDICTION_TYPES:
        raise ConfigError(f"scheduler prediction_type {prediction_type!r} is not supported; expected one of "
                          f"{PREDICTION_TYPES}")
    return scheduler, DiscreteLogSNR(scheduler.alphas_cumprod), prediction_type


def build_sd_model(opts: SDOptions, class_names: Sequence[str], image_size: int, channels: int,
                   device: torch.device | str = "cpu") -> tuple[SDModel, Any]:
    """The pretrained model for fine-tuning: (SDModel with the pretrained UNet, the DDPMScheduler for add_noise)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    ref = resolve_pretrained(opts.pretrained)
    folder = ensure_pretrained(ref, opts.tiny_seed)
    vae, text_encoder, tokenizer = _frozen_parts(folder, device)
    with quiet_loading():
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", low_cpu_mem_usage=_low_cpu_mem())
    scheduler_config = dict(DDPMScheduler.load_config(folder, subfolder="scheduler"))
    scheduler, schedule, prediction_type = _schedule(scheduler_config)
    prompts = class_prompts(class_names, opts)
    model = SDModel(
        unet=unet, vae=vae, prompt_embeds=encode_prompts(tokenizer, text_encoder, prompts, device), schedule=schedule,
        scheduler_config=_json_config(scheduler.config), prediction_type=prediction_type,
        class_names=tuple(class_names), prompts=prompts, image_size=image_size, channels=channels, pretrained=ref,
        tiny_seed=opts.tiny_seed, frozen_sha256=frozen_fingerprint(folder),
    )
    _check_size(model)
    return model, scheduler


def _check_size(model: SDModel) -> None:
    if model.image_size % model.downsample:
        raise ConfigError(f"data.image_size: {model.image_size} is not a multiple of the VAE's downsampling factor "
                          f"{model.downsample}")
    if model.channels not in (1, 3) or model.vae.config.in_channels != 3:
        raise ConfigError(f"the VAE takes {model.vae.config.in_channels} channels; meddiff feeds it RGB (grayscale "
                          f"repeated), so it must take 3")


def load_sd_model(path, device: torch.device | str = "cpu", null_prompt: bool = False) -> SDModel:
    """Rebuild a fine-tuned model from a bundle: the UNet from metadata's config + the bundle's weights, the frozen
    parts from the pretrained folder (re-resolved here; rebuilt for ``tiny:``), checked against the fingerprint.
    ``null_prompt``: also encode the empty prompt "" into ``null_embed`` (classifier-free guidance's null condition)
    while the text encoder is loaded."""
    from diffusers import UNet2DConditionModel

    bundle = read_bundle(path)
    meta = bundle.metadata
    if meta.get("kind") != KIND:
        raise CheckpointError(f"{bundle.path}: is a {meta.get('kind')!r} checkpoint, not a {KIND} model")
    ref = resolve_pretrained(meta["pretrained"])
    try:
        folder = ensure_pretrained(ref, int(meta.get("tiny_seed") or 0))
    except ConfigError as exc:
        raise CheckpointError(f"{bundle.path}: its frozen VAE/text encoder come from {meta['pretrained']!r}: "
                              f"{exc}") from None
    fingerprint = frozen_fingerprint(folder)
    if fingerprint != meta["frozen_sha256"]:
        raise CheckpointError(
            f"{bundle.path}: the VAE/text encoder/tokenizer files in {folder} differ from the ones this UNet was "
            f"fine-tuned with (fingerprint {fingerprint[:12]} != {meta['frozen_sha256'][:12]}); point "
            f"${{MEDDIFF_MODELS}} or the folder at the original pretrained model"
        )
    vae, text_encoder, tokenizer = _frozen_parts(folder, device)
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten; keep the caller's RNG stream untouched
        unet = UNet2DConditionModel.from_config(meta["unet_config"])
    load_weights(bundle, unet)
    unet.to(device).eval().requires_grad_(False)
    _, schedule, prediction_type = _schedule(meta["scheduler_config"])
    prompts = tuple(meta["prompts"])
    model = SDModel(
        unet=unet, vae=vae, prompt_embeds=encode_prompts(tokenizer, text_encoder, prompts, device), schedule=schedule,
        scheduler_config=meta["scheduler_config"], prediction_type=prediction_type,
        class_names=tuple(meta["class_names"]), prompts=prompts, image_size=int(meta["image_size"]),
        channels=int(meta["channels"]), pretrained=ref, tiny_seed=int(meta.get("tiny_seed") or 0),
        frozen_sha256=fingerprint, model_id=bundle.model_id, metadata=meta,
        null_embed=encode_prompts(tokenizer, text_encoder, [""], device)[0] if null_prompt else None,
    )
    return model
