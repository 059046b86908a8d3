"""Seeded (t, eps) draws: noise depends only on (run seed, image id, draw index).

Every image gets its own seed from (run seed, image id), every draw k its own generator seeded from (image seed, k). So
an image's draws are the same whatever the batch size, the batch order, the number of actors or the chunking of draws
(early exit evaluates draws in chunks). Generators live on the device the draws are made on: CPU and CUDA streams differ,
each is reproducible.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch

_MASK63 = (1 << 63) - 1
_MASK64 = (1 << 64) - 1


def image_seed(run_seed: int, image_id: str) -> int:
    """63-bit seed of one image: sha256 of (run seed, id), stable across processes and Python versions."""
    digest = hashlib.sha256(f"{int(run_seed)}\x00{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & _MASK63


def draw_seed(img_seed: int, k: int) -> int:
    """63-bit seed of draw k of an image (splitmix64 finaliser of seed + k * golden ratio)."""
    z = (img_seed + (k + 1) * 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) & _MASK63


def pair_noise(
    img_seeds: Sequence[int],
    draw_ids: Sequence[int],
    shape: tuple[int, ...],
    t_min: float = 0.0,
    t_max: float = 1.0,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (t, eps) of P arbitrary (image seed, draw index) pairs.

    Returns:
        t: [P] uniform on [t_min, t_max]; eps: [P, *shape] standard normal.
    """
    device = torch.device(device)
    p = len(img_seeds)
    t = torch.empty(p, device=device)
    eps = torch.empty((p,) + tuple(shape), device=device)
    gen = torch.Generator(device=device)
    for i, (s, d) in enumerate(zip(img_seeds, draw_ids)):
        gen.manual_seed(draw_seed(int(s), int(d)))
        t[i] = torch.rand((), generator=gen, device=device)
        eps[i] = torch.randn(shape, generator=gen, device=device)
    return t_min + (t_max - t_min) * t, eps


def draw_pairs(
    img_seeds: Sequence[int],
    draws: Sequence[int],
    shape: tuple[int, ...],
    t_min: float = 0.0,
    t_max: float = 1.0,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (t, eps) pairs of the given draw indices for each image.

    Returns:
        t: [B, K] uniform on [t_min, t_max]; eps: [B, K, *shape] standard normal.
    """
    b, k = len(img_seeds), len(draws)
    seeds = [s for s in img_seeds for _ in range(k)]
    ids = [d for _ in range(b) for d in draws]
    t, eps = pair_noise(seeds, ids, shape, t_min, t_max, device)
    return t.reshape(b, k), eps.reshape((b, k) + tuple(shape))
