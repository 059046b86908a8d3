"""Hyper-features of a frozen conditional diffusion model (D-Cube step 2): noise the image at a fixed t, run the
denoiser once, capture block activations with forward hooks and pool them spatially.

For an image x (pixels in [-1, 1]) and the fixed time t:
  1. x -> model space (the Haar DWT when the model was trained on wavelets).
  2. z_t = alpha_t x + sigma_t eps, eps seeded from (seed, image id) by ``meddiff.diffusion.noise`` (or z = x for the
     ``clean`` input), time input = lambda(t) or 1000 t as the model was trained.
  3. One pass of the denoiser under the null class (or one per class, concatenated); every hooked module's output
     [B, C, H, W] is averaged over space ([B, N, D] DiT tokens over tokens): a [B, C] feature per layer.
The denoiser's weights are never touched; ``soft_class_conditioning`` lets the cycle loss (eq. 7) condition it on a
probability vector instead of a class index.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from meddiff.data import ImageDecoder, Manifest, ManifestDataset
from meddiff.diffusion.loss import time_input
from meddiff.diffusion.model import DiffusionModel
from meddiff.diffusion.noise import image_seed, pair_noise
from meddiff.diffusion.schedule import alpha_sigma
from meddiff.diffusion.vparam import diffuse, eps_from_v
from meddiff.errors import ConfigError
from meddiff.progress import Progress


@dataclass(frozen=True)
class FeatureSpec:
    """How features are taken (everything a predictor needs besides the weights)."""

    t: float
    input: str = "noised"
    conditioning: str = "null_class"
    pool: str = "mean"
    layers: tuple[str, ...] = ()

    def passes_per_image(self, num_classes: int) -> int:
        """Denoiser evaluations per image (the results' ``nfe``)."""
        return num_classes if self.conditioning == "per_class" else 1


def candidate_layers(denoiser: nn.Module, granularity: str = "block") -> dict[str, nn.Module]:
    """The hookable layers of a meddiff denoiser, in network order.

    UNet (diffusers UNet2DModel / UNet2DConditionModel): ``down.i``, ``mid``, ``up.i`` (block outputs) or, with
    granularity ``layer``, their ResNets, attentions and samplers (``down.0.resnets.0``, ``mid.attentions.0``, ...).
    DiT: ``block.i``, the outputs of the transformer blocks (both granularities).
    """
    net = getattr(denoiser, "net", denoiser)
    if hasattr(net, "down_blocks") and hasattr(net, "mid_block") and hasattr(net, "up_blocks"):
        blocks = [(f"down.{i}", b) for i, b in enumerate(net.down_blocks)]
        if net.mid_block is not None:
            blocks.append(("mid", net.mid_block))
        blocks += [(f"up.{i}", b) for i, b in enumerate(net.up_blocks)]
        if granularity == "block":
            return dict(blocks)
        out: dict[str, nn.Module] = {}
        for name, block in blocks:
            for kind in ("resnets", "attentions", "downsamplers", "upsamplers"):
                for j, layer in enumerate(getattr(block, kind, None) or []):
                    if layer is not None:
                        out[f"{name}.{kind}.{j}"] = layer
        return _in_call_order(denoiser, out) if out else dict(blocks)
    if hasattr(net, "transformer_blocks"):
        return {f"block.{i}": b for i, b in enumerate(net.transformer_blocks)}
    raise ConfigError(f"D-Cube: cannot find the blocks of a {type(net).__name__} denoiser (known: the diffusers UNets "
                      f"and DiT of meddiff.models)")


def _in_call_order(denoiser: nn.Module, layers: dict[str, nn.Module]) -> dict[str, nn.Module]:
    # inside a diffusers block the attention after each ResNet is registered first; order the names as they run
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda _m, _i, _o, n=n: order.append(n)) for n, m in layers.items()]
    try:
        p = next(denoiser.parameters())
        side = getattr(getattr(denoiser, "net", denoiser), "config").sample_size
        in_ch = getattr(getattr(denoiser, "net", denoiser), "config").in_channels
        with torch.no_grad():
            denoiser(torch.zeros(1, in_ch, side, side, device=p.device), torch.zeros(1, device=p.device),
                     torch.zeros(1, dtype=torch.long, device=p.device))
    finally:
        for h in hooks:
            h.remove()
    seen = list(dict.fromkeys(order))
    return {n: layers[n] for n in seen + [n for n in layers if n not in seen]}


def pool_activation(out, pool: str = "mean") -> torch.Tensor:
    """A hooked module's output -> [B, D]: a tensor [B, C, H, W] (mean over H, W), [B, N, D] (mean over tokens), or a
    tuple / diffusers output whose first element is one."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    if hasattr(out, "sample"):
        out = out.sample
    x = out.float()
    dims = (2, 3) if x.ndim == 4 else (1,) if x.ndim == 3 else None
    if dims is None:
        raise ValueError(f"D-Cube: cannot pool an activation of shape {tuple(x.shape)}")
    mean = x.mean(dim=dims)
    if pool == "mean":
        return mean
    return torch.cat([mean, x.std(dim=dims, unbiased=False)], dim=1)


@contextmanager
def captured(layers: dict[str, nn.Module], pool: str) -> Iterator[dict[str, torch.Tensor]]:
    """Hooks on ``layers``; inside the block every forward pass stores each layer's pooled output [B, D] by name."""
    store: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Callable:
        def fn(_module, _inputs, output):
            store[name] = pool_activation(output, pool)
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def denoiser_inputs(model: DiffusionModel, pixels: torch.Tensor, ids: Sequence[str], seed: int, t: float,
                    kind: str = "noised") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The denoiser's inputs at time t.

    Args:
        pixels: [B, channels, S, S] in [-1, 1] (on the model's device); ids: B image ids (they seed eps).
    Returns:
        z [B, C_m, H_m, W_m] (z_t, or x itself for ``clean``), time [B] (the model's time input), alpha [B], sigma [B].
    """
    x = model.to_model_space(pixels)
    b, device = x.shape[0], x.device
    tt = torch.full((b,), float(t), device=device)
    logsnr = model.schedule.logsnr(tt)
    alpha, sigma = alpha_sigma(logsnr)
    if kind == "noised":
        _, eps = pair_noise([image_seed(seed, str(i)) for i in ids], [0] * b, tuple(x.shape[1:]), t, t, device)
        z = diffuse(x, eps, alpha, sigma)
    else:
        z = x
    return z, time_input(logsnr, tt, model.diffusion.time_input), alpha, sigma


@torch.no_grad()
def pooled_features(model: DiffusionModel, layers: dict[str, nn.Module], z: torch.Tensor, time: torch.Tensor,
                    conditioning: str = "null_class", pool: str = "mean") -> dict[str, torch.Tensor]:
    """layer name -> pooled activations [B, D] (per_class: [B, C * D], the classes' features side by side)."""
    b = z.shape[0]
    classes = [model.num_classes] if conditioning == "null_class" else list(range(model.num_classes))
    per_class: list[dict[str, torch.Tensor]] = []
    with captured(layers, pool) as store:
        for c in classes:
            model.denoiser(z, time, torch.full((b,), c, dtype=torch.long, device=z.device))
            missing = [n for n in layers if n not in store]
            if missing:
                raise RuntimeError(f"D-Cube: layers {missing} did not run in the denoiser's forward pass")
            per_class.append(dict(store))
            store.clear()
    return {n: torch.cat([pc[n] for pc in per_class], dim=1) for n in layers}


def image_features(model: DiffusionModel, layers: dict[str, nn.Module], spec: FeatureSpec, pixels: torch.Tensor,
                   ids: Sequence[str], seed: int) -> dict[str, torch.Tensor]:
    """Pixels [B, channels, S, S] -> layer name -> [B, D] features (steps 1-3 of the module docstring)."""
    z, time, _, _ = denoiser_inputs(model, pixels, ids, seed, spec.t, spec.input)
    return pooled_features(model, layers, z, time, spec.conditioning, spec.pool)


def hflip(pixels: torch.Tensor) -> torch.Tensor:
    """Horizontal flip of images [..., H, W] (the paper's augmentation and the consistency loss's T)."""
    return torch.flip(pixels, dims=(-1,))


@dataclass
class SplitFeatures:
    """Features of one split, in manifest order.

    features / flipped: layer -> [N, D] float32 on the CPU (flipped: of the horizontally flipped images, or None);
    labels [N]; ids: N image ids; inputs: the unflipped denoiser inputs z [N, C_m, H_m, W_m] (kept for the cycle loss)
    or None.
    """

    features: dict[str, torch.Tensor]
    labels: torch.Tensor
    ids: list[str]
    flipped: dict[str, torch.Tensor] | None = None
    inputs: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.ids)


def extract_split(model: DiffusionModel, manifest: Manifest, decoder: ImageDecoder, layers: dict[str, nn.Module],
                  spec: FeatureSpec, seed: int, device: torch.device, batch_size: int = 64, flips: bool = False,
                  keep_inputs: bool = False, num_workers: int = 0, label: str = "[dcube] features",
                  log: Callable[[str], None] | None = None) -> SplitFeatures:
    """Features of every image of ``manifest`` (decoded batch by batch: never the whole split in memory)."""
    n = len(manifest)
    ids = [str(i) for i in manifest.frame["id"].tolist()]
    loader = DataLoader(ManifestDataset(manifest, decoder), batch_size=batch_size, num_workers=num_workers)
    feats: dict[str, list[torch.Tensor]] = {k: [] for k in layers}
    flipped: dict[str, list[torch.Tensor]] = {k: [] for k in layers}
    inputs: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    progress = Progress(n, label, unit="img", every_s=15.0, write=log)
    for pixels, y, index in loader:
        pixels = pixels.to(device)
        batch_ids = [ids[int(i)] for i in index]
        z, time, _, _ = denoiser_inputs(model, pixels, batch_ids, seed, spec.t, spec.input)
        for k, v in pooled_features(model, layers, z, time, spec.conditioning, spec.pool).items():
            feats[k].append(v.cpu())
        if flips:
            for k, v in image_features(model, layers, spec, hflip(pixels), batch_ids, seed).items():
                flipped[k].append(v.cpu())
        if keep_inputs:
            inputs.append(z.cpu())
        labels.append(y)
        progress.update(len(y))
    if n == 0:
        raise ValueError(f"{label}: the split has no images")
    return SplitFeatures(
        features={k: torch.cat(v) for k, v in feats.items()},
        labels=torch.cat(labels).long(),
        ids=ids,
        flipped={k: torch.cat(v) for k, v in flipped.items()} if flips else None,
        inputs=torch.cat(inputs) if keep_inputs else None,
    )


def class_tables(denoiser: nn.Module, num_classes: int) -> list[nn.Embedding]:
    """The denoiser's class embedding tables (num_classes + 1 rows, the last the null class)."""
    return [m for m in denoiser.modules() if isinstance(m, nn.Embedding) and m.num_embeddings == num_classes + 1]


@contextmanager
def soft_class_conditioning(denoiser: nn.Module, num_classes: int, probs: torch.Tensor) -> Iterator[None]:
    """Inside the block the denoiser is conditioned on class probabilities ``probs`` [B, num_classes]: every class
    embedding lookup returns sum_c probs[b, c] * embedding[c] instead of the row of the label it was given (the label
    argument is then ignored). Differentiable in ``probs``: the cycle loss trains the head through the frozen model."""
    tables = class_tables(denoiser, num_classes)
    if not tables:
        raise ConfigError(f"D-Cube cycle loss: the denoiser has no class embedding table with {num_classes + 1} rows "
                          f"to condition on soft labels; set method_options.cycle_weight: 0")

    def hook(module: nn.Embedding, _inputs, output: torch.Tensor) -> torch.Tensor:
        mixed = probs.to(module.weight.dtype) @ module.weight[:num_classes]
        return mixed.reshape(output.shape)

    handles = [t.register_forward_hook(hook) for t in tables]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def eps_prediction(model: DiffusionModel, z: torch.Tensor, time: torch.Tensor, alpha: torch.Tensor,
                   sigma: torch.Tensor, labels: torch.Tensor | None = None,
                   probs: torch.Tensor | None = None) -> torch.Tensor:
    """eps_theta(z_t, y) = sigma z + alpha v_hat for hard ``labels`` [B] or soft ``probs`` [B, C] (with gradients
    flowing into ``probs``)."""
    if probs is not None:
        with soft_class_conditioning(model.denoiser, model.num_classes, probs):
            v = model.denoiser(z, time, torch.zeros(z.shape[0], dtype=torch.long, device=z.device))
    else:
        v = model.denoiser(z, time, labels)
    return eps_from_v(z, v.float(), alpha, sigma)


def mid_layer(names: Sequence[str]) -> str:
    """The layer standing for the paper's f_mid: the UNet's mid block (its last sub-layer at ``layer`` granularity),
    else the middle of the given layers (DiT: the middle transformer block)."""
    names = list(names)
    if not names:
        raise ValueError("mid_layer: no layers")
    mids = [n for n in names if n == "mid" or n.startswith("mid.")]
    return mids[-1] if mids else names[len(names) // 2]
