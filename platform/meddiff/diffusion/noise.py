"""Seeded (t, eps) draws: noise depends only on (run seed, image id, draw index).

Every image gets its own seed from (run seed, image id), every draw k its own generator seeded from (image seed, k). So
an image's draws are the same whatever the batch size, the batch order, the number of actors or the chunking of draws
(early exit evaluates draws in chunks). Generators live on the device the draws are made on: CPU and CUDA streams differ,
each is reproducible.

How the draws of one image are laid out (``DrawScheme``, ``score.t_draws`` / ``score.antithetic``):
  uniform     every draw's t is uniform on [t_min, t_max], independently (the paper's and the official code's).
  stratified  draws come in blocks of ``strata``: block b gives each of the strata [j / K, (j + 1) / K) of the unit
              interval one draw, in a seeded order, at a uniform position inside it (stratified sampling; Cochran,
              Sampling Techniques, 1977, ch. 5). Every draw's t is still marginally uniform, so the estimand (the vote
              share over uniform t) is unchanged; a full block's vote count has at most the variance of independent
              draws, less when the vote depends on t. Draws stay independent given the image, so the mixture tests of
              ``stopping`` stay valid when looked at on block boundaries (proof in ``stopping``).
  antithetic  draws come in pairs (2j, 2j + 1) sharing t, the second with the negated noise (antithetic variates;
              Hammersley and Morton 1956). The pair's two votes are dependent, so no anytime-valid guarantee covers
              sequential stopping on them; offered with ``none`` and ``exact`` stopping and measured by the benchmark.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import torch

_MASK63 = (1 << 63) - 1
_MASK64 = (1 << 64) - 1
_STRATA_TAG = 0x5354524154413031  # separates the seeds of the strata orders from the draws' seeds

T_DRAWS = ("uniform", "stratified")


@dataclass(frozen=True)
class DrawScheme:
    """How an image's draws are laid out (module docstring). The default is independent uniform draws."""

    t_draws: str = "uniform"
    strata: int = 8
    antithetic: bool = False

    def __post_init__(self) -> None:
        if self.t_draws not in T_DRAWS:
            raise ValueError(f"t_draws: expected one of {T_DRAWS}, got {self.t_draws!r}")
        if self.strata < 1:
            raise ValueError(f"strata: expected a positive integer, got {self.strata!r}")

    @property
    def block(self) -> int:
        """Draws per block: a look on a block boundary sees whole strata (and whole antithetic pairs)."""
        return (self.strata if self.t_draws == "stratified" else 1) * (2 if self.antithetic else 1)


UNIFORM = DrawScheme()


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
    scheme: DrawScheme = UNIFORM,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (t, eps) of P arbitrary (image seed, draw index) pairs, laid out by ``scheme``.

    Returns:
        t: [P] on [t_min, t_max], each marginally uniform; eps: [P, *shape] standard normal.
    """
    device = torch.device(device)
    p = len(img_seeds)
    t = torch.empty(p, device=device)
    eps = torch.empty((p,) + tuple(shape), device=device)
    gen = torch.Generator(device=device)
    orders: dict[tuple[int, int], list[int]] = {}
    for i, (s, d) in enumerate(zip(img_seeds, draw_ids)):
        s, d = int(s), int(d)
        unit = d // 2 if scheme.antithetic else d  # an antithetic pair shares its generator: same t, same noise
        gen.manual_seed(draw_seed(s, unit))
        u = torch.rand((), generator=gen, device=device)
        eps[i] = torch.randn(shape, generator=gen, device=device)
        if scheme.antithetic and d % 2:
            eps[i].neg_()
        if scheme.t_draws == "stratified":
            block, pos = divmod(unit, scheme.strata)
            if (s, block) not in orders:
                orders[(s, block)] = strata_order(s, block, scheme.strata)
            u = (orders[(s, block)][pos] + u) / scheme.strata
        t[i] = u
    return t_min + (t_max - t_min) * t, eps


def strata_order(img_seed: int, block: int, strata: int) -> list[int]:
    """The seeded order in which block ``block`` of an image visits the ``strata`` strata of t."""
    gen = torch.Generator().manual_seed(draw_seed(img_seed ^ _STRATA_TAG, block))
    return torch.randperm(strata, generator=gen).tolist()


def draw_pairs(
    img_seeds: Sequence[int],
    draws: Sequence[int],
    shape: tuple[int, ...],
    t_min: float = 0.0,
    t_max: float = 1.0,
    device: torch.device | str = "cpu",
    scheme: DrawScheme = UNIFORM,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (t, eps) pairs of the given draw indices for each image.

    Returns:
        t: [B, K] uniform on [t_min, t_max]; eps: [B, K, *shape] standard normal.
    """
    b, k = len(img_seeds), len(draws)
    seeds = [s for s in img_seeds for _ in range(k)]
    ids = [d for _ in range(b) for d in draws]
    t, eps = pair_noise(seeds, ids, shape, t_min, t_max, device, scheme)
    return t.reshape(b, k), eps.reshape((b, k) + tuple(shape))
