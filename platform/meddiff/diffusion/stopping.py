"""When may an image stop drawing noise? Stopping rules for the majority vote (pure functions over vote counts).

``exact``: stop once the leading class cannot be caught: votes[leader] > votes[runner-up] + draws left. The remaining
    draws cannot change the majority (ties go to the mean error, hence the strict ">"), so the prediction equals the
    full-N vote on the same noise sequence, always.
``wilson``: a sequential test on the vote share. The leader is accepted when the lower Wilson score bound of its share
    exceeds the upper bound of every other class's share. A fixed-n confidence bound checked after every chunk is NOT
    valid under repeated looks (optional stopping inflates the error); meddiff makes it valid by a union bound over the
    planned looks: each look uses delta / L, with L = ceil(N / chunk) looks, so P(stopping on a wrong leader) <= delta
    for the vote-share limit, whatever the stopping time.
``wilson_per_look``: the same Wilson test at level delta at every look, with no correction for looking again: the
    rule most early-exit write-ups use. Its delta is a per-look error rate only; under repeated looks the chance of
    ever stopping on a wrong leader is many times delta (tests measure it: 0.12 at delta = 0.01 over 501 looks on a
    tie). Offered for comparison with the literature and because, on well-separated images, it agrees with the full vote
    at a fraction of the draws; the benchmark measures that agreement rather than assuming it.
``hoeffding``: an anytime-valid bound: Hoeffding's inequality with a union bound over all n = 1, 2, ... using
    delta_n = delta / (n (n + 1)) (sum_n delta_n = delta), so the guarantee holds at every draw count simultaneously;
    wider than Wilson early on.
``mixture``: an anytime-valid mixture sequential probability ratio test (Robbins' mixture martingale). For an ordered
    pair of classes (i, j), among the k + m draws won by i or j (k by i), the test of "i's share of them is at most
    1/2" has the likelihood ratio mixed over a uniform prior on shares q in (1/2, 1):
        M_ij = 2 * 2^(k+m) * integral_{1/2}^{1} q^k (1 - q)^m dq = 2^(k+m+1) B(k+1, m+1) (1 - I_{1/2}(k+1, m+1)),
    a non-negative supermartingale (E <= 1) whenever i's true share is <= 1/2, whatever the draws other classes win.
    By Ville's inequality P(sup_n M_ij >= 1/a) <= a, so the guarantee holds under continuous monitoring, any chunk
    size and any stopping time, with no planned number of looks. The leader is accepted when M_leader,j >= (C - 1) /
    delta for every rival j. Stopping on a wrong class l (one whose limit share is below the limit leader j*'s) needs
    M_l,j* to cross, a pair whose null is true; there are at most C - 1 such pairs, so P(stopping on a wrong class) <=
    delta. It needs fewer draws than the Wilson rule because it pays no Bonferroni factor for looks (on two classes:
    9 unanimous draws at delta = 0.01 against 19 for Wilson over 501 looks).
The sequential rules also stop when the exact rule does, and never go beyond N draws. Their guarantee is about the vote
share's limit (the infinite-N vote); agreement with the finite-N vote is measured by the benchmark.
"""

from __future__ import annotations

import importlib
import math
from typing import Callable

import numpy as np
import torch
from scipy.special import betainc, betaln
from scipy.stats import norm

from meddiff.rules import STOPPING_RULES, stopping_rule

RULES = tuple(STOPPING_RULES)  # the names, in the registry's order (``meddiff.rules``)


def exact_stop(votes: torch.Tensor, drawn: torch.Tensor, n_max: int) -> torch.Tensor:
    """[B, C] votes after ``drawn`` [B] draws of at most ``n_max`` -> [B] bool: the leader can no longer be caught."""
    top2 = votes.topk(2, dim=1).values if votes.shape[1] > 1 else torch.cat([votes, torch.zeros_like(votes)], 1)
    left = n_max - drawn
    return (top2[:, 0] - top2[:, 1] > left) | (drawn >= n_max)


def wilson_bounds(k: torch.Tensor, n: torch.Tensor, z: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Wilson score interval of a binomial proportion k / n (elementwise, any shape); (lower, upper)."""
    n = n.to(torch.float64).clamp(min=1)
    p = k.to(torch.float64) / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * torch.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return centre - half, centre + half


def hoeffding_radius(n: torch.Tensor, delta: float) -> torch.Tensor:
    """Anytime-valid Hoeffding radius at n draws: sqrt(log(2 / delta_n) / (2 n)), delta_n = delta / (n (n + 1))."""
    n = n.to(torch.float64).clamp(min=1)
    return torch.sqrt(torch.log(2.0 * n * (n + 1) / delta) / (2.0 * n))


def log_mixture_ratio(k: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """log M for k wins against m (elementwise): the uniform-on-(1/2, 1) mixture likelihood ratio of "the first class's
    share of these draws exceeds 1/2" against share 1/2 (see the module docstring)."""
    kk = k.detach().cpu().to(torch.float64).numpy()
    mm = m.detach().cpu().to(torch.float64).numpy()
    # upper tail of Beta(k + 1, m + 1) beyond 1/2 = I_{1/2}(m + 1, k + 1) by symmetry (no 1 - x cancellation)
    tail = betainc(mm + 1, kk + 1, 0.5)
    with np.errstate(divide="ignore"):
        out = (kk + mm + 1) * math.log(2) + betaln(kk + 1, mm + 1) + np.log(tail)
    return torch.from_numpy(out).to(k.device)


def mixture_stop(votes: torch.Tensor, delta: float) -> torch.Tensor:
    """[B, C] votes -> [B] bool: the leader's mixture martingale against every rival crossed (C - 1) / delta."""
    c = votes.shape[1]
    threshold = math.log((c - 1) / delta)
    lead = votes.argmax(dim=1, keepdim=True)
    k = votes.gather(1, lead).expand_as(votes)
    log_m = log_mixture_ratio(k, votes)
    rivals = torch.ones_like(votes, dtype=torch.bool).scatter_(1, lead, False)
    return ((log_m >= threshold) | ~rivals).all(dim=1)


def looks(n_max: int, chunk: int) -> int:
    return max(1, math.ceil(n_max / max(1, chunk)))


def no_early_stop(votes: torch.Tensor, drawn: torch.Tensor, n_max: int, delta: float, chunk: int) -> torch.Tensor:
    """``none``: every image runs to ``n_max`` draws."""
    return drawn >= n_max


def exact_rule(votes: torch.Tensor, drawn: torch.Tensor, n_max: int, delta: float, chunk: int) -> torch.Tensor:
    """``exact``: the leader can no longer be caught (or ``n_max`` is reached)."""
    return exact_stop(votes, drawn, n_max)


def sequential(test):
    """A sequential rule stops when its test accepts the leader, and also whenever ``exact`` does (a single class
    always stops there: it has no rival to test against)."""

    def rule(votes: torch.Tensor, drawn: torch.Tensor, n_max: int, delta: float, chunk: int) -> torch.Tensor:
        stop = exact_stop(votes, drawn, n_max)
        return stop if votes.shape[1] < 2 else stop | test(votes, drawn, n_max, delta, chunk)

    rule.__doc__ = test.__doc__
    return rule


def _leader_runner(votes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    order = votes.argsort(dim=1, descending=True)
    lead = votes.gather(1, order[:, :1]).squeeze(1)
    runner = votes.gather(1, order[:, 1:2]).squeeze(1)  # the strongest rival bounds all others
    return lead, runner


def _wilson(votes: torch.Tensor, drawn: torch.Tensor, delta: float, n_looks: int) -> torch.Tensor:
    # two bounds per look (leader, rival), L looks: delta / (2 L) in each one-sided tail (L = 1: per look)
    z = float(norm.isf(delta / (2 * n_looks)))
    lead, runner = _leader_runner(votes)
    lead_lo, _ = wilson_bounds(lead, drawn, z)
    _, runner_hi = wilson_bounds(runner, drawn, z)
    return lead_lo > runner_hi


@sequential
def wilson_stop(votes: torch.Tensor, drawn: torch.Tensor, n_max: int, delta: float, chunk: int) -> torch.Tensor:
    """``wilson``: Wilson bounds separated, at delta / (2 L) per tail for the L planned looks."""
    return _wilson(votes, drawn, delta, looks(n_max, chunk))


@sequential
def wilson_per_look_stop(votes: torch.Tensor, drawn: torch.Tensor, n_max: int, delta: float, chunk: int
                         ) -> torch.Tensor:
    """``wilson_per_look``: Wilson bounds separated at delta / 2 per tail, with no correction for looking again."""
    return _wilson(votes, drawn, delta, 1)


@sequential
def hoeffding_stop(votes: torch.Tensor, drawn: torch.Tensor, n_max: int, delta: float, chunk: int) -> torch.Tensor:
    """``hoeffding``: anytime-valid Hoeffding intervals of the leader's and the runner-up's shares separated."""
    lead, runner = _leader_runner(votes)
    n = drawn.to(torch.float64).clamp(min=1)
    r = hoeffding_radius(drawn, delta / 2)
    return lead / n - r > runner / n + r


@sequential
def mixture_stop_rule(votes: torch.Tensor, drawn: torch.Tensor, n_max: int, delta: float, chunk: int) -> torch.Tensor:
    """``mixture``: the leader's mixture martingale against every rival crossed (C - 1) / delta."""
    return mixture_stop(votes, delta)


_TESTS: dict[str, Callable[..., torch.Tensor]] = {}


def _test(rule: str) -> Callable[..., torch.Tensor]:
    """The stopping test the registry entry of ``rule`` names (resolved once)."""
    if rule not in _TESTS:
        module, _, attr = stopping_rule(rule).test.partition(":")
        _TESTS[rule] = getattr(importlib.import_module(module), attr)
    return _TESTS[rule]


def should_stop(votes: torch.Tensor, drawn: torch.Tensor, n_max: int, rule: str, delta: float = 0.01,
                chunk: int = 1) -> torch.Tensor:
    """[B, C] votes, [B] draws so far -> [B] bool: the test of the stopping rule ``rule`` (``meddiff.rules``), and
    every image stops at ``n_max`` draws. ``chunk`` is how many draws are added between looks (for the Wilson union
    bound over looks)."""
    return (drawn >= n_max) | _test(rule)(votes, drawn, n_max, delta, chunk)
