"""Device and precision choice: CUDA with bf16 autocast when present, CPU fp32 otherwise."""

from __future__ import annotations

import torch

from meddiff.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda if available else cpu; ``cuda`` on a machine without CUDA is an error, not a silent fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available on this machine; use 'auto' or 'cpu'")
    return device


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``: bf16 on CUDA for auto/bf16, None (fp32) otherwise."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if device.type == "cuda" else None


def set_threads(num_threads: int) -> None:
    """Limit intra-op threads (0 keeps torch's default: one per core)."""
    if num_threads > 0:
        torch.set_num_threads(num_threads)
