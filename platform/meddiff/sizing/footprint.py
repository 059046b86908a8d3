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
  tests/sizing/test_footprint.py), so the default is ``meta``; attention is the exception to keep in mind: on meta and
  CPU scaled-dot-product attention may keep the [B, heads, L, L] score matrix that a CUDA flash kernel never writes,
  so the inference peak of attention-heavy networks is an upper bound.
- Per image: measured at batch 1 and 2 and extrapolated linearly (bytes(B) = fixed + B x per_image; both measures are
  linear in the batch for these networks, the fixed part is e.g. embeddings shared by the batch).
- Precision: measured with the network and inputs in the config's training / scoring precision (bf16 -> bfloat16
  weights and activations). Under CUDA autocast some ops (normalisations, softmax) keep float32 outputs, so real bf16
  runs hold somewhat more than this; weights are counted in float32 (autocast keeps float32 master weights).
"""

from __future__ import annotations

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

    was = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(True)  # a frozen network saves nothing; size it as if trained
    try:
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(*inputs)
    finally:
        for p, flag in zip(model.parameters(), was):
            p.requires_grad_(flag)
    return sum(seen.values())


def inference_peak_bytes(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """Peak bytes of tensors live during one forward of ``model(*inputs)`` under no_grad (parameters, buffers and the
    inputs themselves excluded), from MemTracker."""
    from torch.distributed._tools.mem_tracker import MemTracker, _MemRefType

    tracker = MemTracker()
    tracker.track_external(model)
    with tracker, torch.no_grad():
        model(*inputs)
    peak = tracker.get_tracker_snapshot("peak")
    device = inputs[0].device
    stats = peak.get(device, {})
    return int(stats.get("Total", 0) - stats.get(_MemRefType.PARAM, 0) - stats.get(_MemRefType.BUFFER, 0))


@dataclass(frozen=True)
class Footprint:
    """One network at full size. Bytes are bytes; FLOPs per forward of one image; per-image activation bytes
    extrapolated from batches 1 and 2 (``*_fixed``: the part independent of the batch).

    trained / train_forwards / score_forwards: from the method (``meddiff.methods.sizing.SizedNetwork``).
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
    dtype: str
    note: str = ""


def _linear(measure, model: nn.Module, inputs1, inputs2) -> tuple[int, int]:
    one, two = measure(model, inputs1), measure(model, inputs2)
    per_image = two - one
    return per_image, one - per_image


def _cast(inputs: tuple[torch.Tensor, ...], dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    return tuple(t.to(dtype) if t.is_floating_point() else t for t in inputs)


def measure_network(model: nn.Module, inputs, trained: bool = True, train_forwards: float = 1.0,
                    score_forwards: float = 1.0, dtype: torch.dtype = torch.float32, device: torch.device | str = "meta",
                    note: str = "") -> Footprint:
    """The Footprint of ``model`` (``inputs``: (batch, device) -> tensors of one forward)."""
    params = list(model.parameters())
    n = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad) if trained else 0
    weight_bytes = sum(p.numel() * 4 for p in params) + sum(b.numel() * b.element_size() for b in model.buffers())
    flops = flops_per_forward(model, inputs(1, device))
    model = model.to(dtype)
    x1, x2 = _cast(inputs(1, device), dtype), _cast(inputs(2, device), dtype)
    train_img, train_fixed = _linear(saved_bytes, model, x1, x2)
    infer_img, infer_fixed = _linear(inference_peak_bytes, model, x1, x2)
    return Footprint(n, trainable, weight_bytes, flops, train_img, train_fixed, infer_img, infer_fixed, trained,
                     train_forwards, score_forwards, str(dtype).removeprefix("torch."), note)


def precision_dtype(precision: str) -> torch.dtype:
    """The activation dtype a config's ``precision`` runs in on a GPU (bf16 -> bfloat16, else float32)."""
    return torch.bfloat16 if precision == "bf16" else torch.float32


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
                                    sized.score_forwards, dtype, device, sized.note)
    return out
