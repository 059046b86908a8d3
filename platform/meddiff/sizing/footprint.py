"""The footprint of a config's networks at full size: parameters, weight bytes, FLOPs per forward and activation
memory per image, measured without the hardware.

Conventions:
- FLOPs (``flops_per_forward``): ``torch.utils.flop_counter.FlopCounterMode``, 2 FLOPs per multiply-add, counting the
  matrix products torch registers formulas for (``mm``, ``addmm``, ``bmm``, ``baddbmm``, convolutions and transposed
  convolutions, scaled-dot-product attention: QK^T and AV). Elementwise work (normalisation, activations, softmax,
  additions) is not counted: it is memory-bound and < 1 % of these networks' multiply-adds. Counted on the ``meta``
  device, where only shapes exist, so the 385.8 M-parameter UNet costs no compute; FLOPs are per forward of ONE image
  (linear in the batch).
- Training activations (``saved_bytes``): the tensors autograd saves for the backward pass, seen through
  ``torch.autograd.graph.saved_tensors_hooks`` and counted once per storage (views share their base), parameters and
  buffers excluded. This is exactly what a batch holds between forward and backward; the backward pass frees them
  while it allocates gradients, so the peak of a training step is these plus the largest transient of one layer.
- Inference activations (``inference_peak_bytes``): the peak of live tensors a forward under ``torch.no_grad``
  allocates, from ``torch.distributed._tools.mem_tracker.MemTracker`` (a dispatch mode that tracks every storage;
  it works on CPU and on ``meta``), parameters and buffers excluded.
  Both memory measures give identical bytes on CPU and on ``meta`` for the same shapes and dtypes (checked in
  tests/sizing/test_footprint.py), so the default is ``meta``. Attention is the one place where the device changes
  what is stored: on meta, ``scaled_dot_product_attention`` falls back to the math path, which materialises and saves
  the [B, heads, L, L] scores, while the fused kernels a GPU (and the CPU) runs save only q, k, v, the output and the
  [B, heads, L] log-sum-exp. The memory measures therefore run attention through the fused CPU kernel's op
  (``fused_attention``; it has a meta implementation), so the bytes are what a flash kernel keeps. FLOPs are counted
  on the math path (QK^T and AV: 4 B heads L^2 d), the same formula torch's counter has for the flash kernels; on CPU
  the counter has no formula for the CPU flash kernel and would miss attention, one more reason to count on meta.
- Per image: measured at batch 1 and 2 and extrapolated linearly (bytes(B) = fixed + B x per_image; both measures are
  linear in the batch for these networks, the fixed part is e.g. embeddings shared by the batch).
- Precision: measured with the network and inputs in the config's training / scoring precision (bf16 -> bfloat16
  weights and activations). Under CUDA autocast some ops (normalisations, softmax) keep float32 outputs, so real bf16
  runs hold somewhat more than this; weights are counted in float32 (autocast keeps float32 master weights).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from meddiff.config import ExperimentConfig, load_config
from meddiff.sizing.networks import full_size


def flops_per_forward(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """FLOPs of ``model(*inputs)`` (2 per multiply-add; matrix products, convolutions and attention only)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    return int(counter.get_total_flops())


def _storage_key(t: torch.Tensor) -> tuple:
    # meta storages have no data pointer; the storage's C++ object identifies it on every device
    s = t.untyped_storage()
    return (t.device.type, s._cdata)


@contextmanager
def _requiring_grad(model: nn.Module):
    """Every parameter requires grad inside (a frozen network is sized as if trained; MemTracker hooks every
    parameter's gradient), restored after."""
    was = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(True)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), was):
            p.requires_grad_(flag)


_FUSED_ERRORS = (RuntimeError, TypeError, ValueError, NotImplementedError)


@contextmanager
def fused_attention():
    """Inside, ``F.scaled_dot_product_attention`` on meta tensors runs the fused (flash) CPU kernel's op instead of
    the math fallback: it saves q, k, v, the output and the log-sum-exp, as the CUDA flash kernel does. Calls the op
    cannot take (e.g. grouped-query attention) keep the original path."""
    import torch.nn.functional as F

    original = F.scaled_dot_product_attention

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        if query.device.type == "meta" and not kwargs and query.dim() == 4:
            try:
                return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                    query, key, value, dropout_p, is_causal, attn_mask=attn_mask, scale=scale)[0]
            except _FUSED_ERRORS:
                pass
        return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                        scale=scale, **kwargs)

    F.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def saved_bytes(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """Bytes of the tensors autograd saves for backward in one training forward of ``model(*inputs)`` (each storage
    once; parameters and buffers excluded)."""
    own = {_storage_key(p) for p in list(model.parameters()) + list(model.buffers())}
    seen: dict[tuple, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key not in own:
            seen[key] = t.untyped_storage().nbytes()
        return t

    with (_requiring_grad(model), fused_attention(), torch.enable_grad(),
          torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)):
        model(*inputs)
    return sum(seen.values())


def inference_peak_bytes(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """Peak bytes of tensors live during one forward of ``model(*inputs)`` under no_grad (parameters, buffers and the
    inputs themselves excluded), from MemTracker."""
    from torch.distributed._tools.mem_tracker import MemTracker, _MemRefType

    tracker = MemTracker()
    tracker.track_external(model)
    with _requiring_grad(model), fused_attention(), tracker, torch.no_grad():
        model(*inputs)
    peak = tracker.get_tracker_snapshot("peak")
    device = inputs[0].device
    stats = peak.get(device, {})
    return int(stats.get("Total", 0) - stats.get(_MemRefType.PARAM, 0) - stats.get(_MemRefType.BUFFER, 0))


@dataclass(frozen=True)
class Footprint:
    """One network at full size. Bytes are bytes; FLOPs per forward of one image; per-image activation bytes
    extrapolated from batches 1 and 2 (``*_fixed``: the part independent of the batch).

    trained / train_forwards / score_forwards / ema: from the method (``meddiff.methods.sizing.SizedNetwork``).
    dtype: the precision activations were measured in.
    """

    parameters: int
    trainable_parameters: int
    weight_bytes: int
    flops_per_forward: int
    train_activation_bytes_per_image: int
    train_activation_bytes_fixed: int
    inference_activation_bytes_per_image: int
    inference_activation_bytes_fixed: int
    trained: bool
    train_forwards: float
    score_forwards: float
    ema: bool
    dtype: str
    note: str = ""


def _linear(measure, model: nn.Module, inputs1, inputs2) -> tuple[int, int]:
    """(per image, fixed) from batches 1 and 2; a negative fixed part (a layer whose buffers grow faster than the batch
    between 1 and 2) is taken as 0, which over-states bytes(B) by at most that much."""
    one, two = measure(model, inputs1), measure(model, inputs2)
    per_image = two - one
    return per_image, max(one - per_image, 0)


def _cast(inputs: tuple[torch.Tensor, ...], dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    return tuple(t.to(dtype) if t.is_floating_point() else t for t in inputs)


def _to_dtype(model: nn.Module, dtype: torch.dtype) -> None:
    import logging

    # diffusers warns on every .to(dtype) of a model that lists float32-only modules (none of ours do)
    log = logging.getLogger("diffusers.models.modeling_utils")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        model.to(dtype)
    finally:
        log.setLevel(level)


def measure_network(model: nn.Module, inputs, trained: bool = True, train_forwards: float = 1.0,
                    score_forwards: float = 1.0, ema: bool = False, dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "meta", note: str = "") -> Footprint:
    """The Footprint of ``model`` (``inputs``: (batch, device) -> tensors of one forward), measured on ``device``
    (``meta`` or ``cpu``: the model must be there). The model is cast to ``dtype`` for the activation measures and
    cast back afterwards (lossless on meta; on CPU a bf16 round trip rounds float32 weights)."""
    params = list(model.parameters())
    n = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad) if trained else 0
    weight_bytes = sum(p.numel() * 4 for p in params) + sum(b.numel() * b.element_size() for b in model.buffers())
    flops = flops_per_forward(model, inputs(1, device))
    original = params[0].dtype if params else torch.float32
    _to_dtype(model, dtype)
    try:
        x1, x2 = _cast(inputs(1, device), dtype), _cast(inputs(2, device), dtype)
        train_img, train_fixed = _linear(saved_bytes, model, x1, x2)
        infer_img, infer_fixed = _linear(inference_peak_bytes, model, x1, x2)
    finally:
        _to_dtype(model, original)
    return Footprint(n, trainable, weight_bytes, flops, train_img, train_fixed, infer_img, infer_fixed, trained,
                     train_forwards, score_forwards, ema, str(dtype).removeprefix("torch."), note)


def precision_dtype(precision: str) -> torch.dtype:
    """The activation dtype a config's ``precision`` runs in on a GPU (bf16 and auto -> bfloat16, as
    ``device.autocast_dtype`` on CUDA; fp32 -> float32)."""
    return torch.float32 if precision == "fp32" else torch.bfloat16


def footprint(cfg: ExperimentConfig | str | Path, device: torch.device | str = "meta",
              dtype: torch.dtype | None = None) -> dict[str, Footprint]:
    """{network name: Footprint} of every network the config's method trains or scores, at full size.

    dtype: the activation precision (default: the config's ``train.precision``).
    """
    if not isinstance(cfg, ExperimentConfig):
        path = Path(cfg)
        cfg, config_dir = load_config(path), path.parent
    else:
        config_dir = None
    dtype = dtype or precision_dtype(cfg.train.precision)
    out = {}
    for name, sized in full_size(cfg, device, config_dir).items():
        out[name] = measure_network(sized.module, sized.inputs, sized.trained, sized.train_forwards,
                                    sized.score_forwards, sized.ema, dtype, device, sized.note)
    return out
