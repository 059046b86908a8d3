"""v-prediction (Salimans & Ho): conversions between the network output v and the data / noise estimates.

    z = alpha x + sigma eps
    v = alpha eps - sigma x
    x_hat = alpha z - sigma v_hat
    eps_hat = sigma z + alpha v_hat

alpha and sigma broadcast against images: pass them shaped [B, 1, 1, 1] (``expand_like``).
"""

from __future__ import annotations

import torch


def expand_like(coef: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[B] -> [B, 1, 1, 1] (as many trailing singleton dims as x has beyond the batch)."""
    return coef.reshape(coef.shape + (1,) * (x.ndim - coef.ndim))


def diffuse(x: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """z_t = alpha x + sigma eps."""
    return expand_like(alpha, x) * x + expand_like(sigma, x) * eps


def v_target(x: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return expand_like(alpha, x) * eps - expand_like(sigma, x) * x


def x_from_v(z: torch.Tensor, v: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return expand_like(alpha, z) * z - expand_like(sigma, z) * v


def eps_from_v(z: torch.Tensor, v: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return expand_like(sigma, z) * z + expand_like(alpha, z) * v
