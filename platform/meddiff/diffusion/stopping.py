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
``futility``: the ``mixture`` leader test at delta / 2, or, as "refer", once the image's vote shares are settled
    inside the referral band, the shares whose normalised vote entropy is above the referral threshold
    (``score.referral``), so that the image is referred whatever its final leader. Two classes: the band is the
    interval (e1, e2) of class-0 shares around 1/2 (``uncertainty.band_edge``), and the image is settled inside it
    when two one-sided mixture tests at delta / 2 reject "share >= e2" and "share <= e1". Each is the likelihood
    ratio against its boundary mixed over a uniform prior on the band, a non-negative supermartingale under its null
    (the construction of the ``mixture`` rule with the prior moved to where the shares of referred images lie; Robbins
    1970, "Statistical methods related to the law of the iterated logarithm", Ann. Math. Statist.); the share cannot
    be on both sides, so wrongly settling inside the band has probability <= delta / 2. C > 2 classes: one
    Beta(1, 1)-mixture confidence sequence per class at delta / (2 C) (Howard, Ramdas, McAuliffe and Sekhon 2021,
    "Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist.),
        CS_n = {p : B(k + 1, n - k + 1) / (p^k (1 - p)^(n - k)) < 2 C / delta},
    and the image is settled when every share vector of the box they allow (intersected with the simplex) has an
    entropy above the threshold; the smallest entropy over that polytope is at a vertex (entropy is concave).
    Guarantee: P(stopping on a wrong leader, or stopping as "refer" while the limit shares' entropy is at or below the
    threshold) <= delta / 2 + delta / 2 = delta, under continuous monitoring and any stopping time. At an exact tie
    any leader is wrong and both directions of the leader test can err, each with probability <= delta / 2 (its
    threshold is (C - 1) / (delta / 2)), so again at most delta, while a stop as "refer" is right there. An image that
    stops on its leader is accepted or referred on its vote entropy so far, as with every other rule; how often that
    matches the full-N decision is measured by the benchmark (``meddiff bench``: decision agreement). An image whose
    limit share sits near the band's edge cannot have its accept / refer decision settled cheaply by any rule, so an
    optional guard (``score.decision_z``) makes a leader stop also wait until the vote entropy is z standard errors
    from the threshold: more draws, decisions closer to the full-N vote's, the same guarantee (waiting longer never
    breaks an anytime-valid test).
Stratified t (``noise.DrawScheme``) keeps the mixture guarantees when the looks fall on block boundaries: a block's
draws are independent with vote probabilities p_1..p_K averaging the share p, and for a fixed mixing share q the
likelihood ratio of the block is a product of K factors 1 + a_j with sum_j a_j <= 0 under the null, whose expectation
is at most (1 + mean a_j)^K <= 1 (the AM-GM inequality), so the mixtures stay supermartingales at block ends.
The sequential rules also stop when the exact rule does, and never go beyond N draws. Their guarantee is about the vote
share's limit (the infinite-N vote); agreement with the finite-N vote is measured by the benchmark.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import math
from typing import Callable

import numpy as np
import torch
from scipy.special import betainc, betaln
from scipy.stats import norm

from meddiff.diffusion.uncertainty import band_edge
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


def no_early_stop(votes: torch.Tensor, drawn: torch.Tensor, n_max: int, delta: float, chunk: int,
                  refer_above: float | None = None, decision_z: float = 0.0) -> torch.Tensor:
    """``none``: every image runs to ``n_max`` draws."""
    return drawn >= n_max


def exact_rule(votes: torch.Tensor, drawn: torch.Tensor, n_max: int, delta: float, chunk: int,
               refer_above: float | None = None, decision_z: float = 0.0) -> torch.Tensor:
    """``exact``: the leader can no longer be caught (or ``n_max`` is reached)."""
    return exact_stop(votes, drawn, n_max)


def sequential(test):
    """A sequential rule stops when its test accepts the leader, and also whenever ``exact`` does (a single class
    always stops there: it has no rival to test against)."""

    takes = set(inspect.signature(test).parameters) & {"refer_above", "decision_z"}

    def rule(votes: torch.Tensor, drawn: torch.Tensor, n_max: int, delta: float, chunk: int,
             refer_above: float | None = None, decision_z: float = 0.0) -> torch.Tensor:
        stop = exact_stop(votes, drawn, n_max)
        if votes.shape[1] < 2:
            return stop
        extra = {k: v for k, v in (("refer_above", refer_above), ("decision_z", decision_z)) if k in takes}
        return stop | test(votes, drawn, n_max, delta, chunk, **extra)

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


def beta_mixture_cs(k: np.ndarray, n: np.ndarray, delta: float, iters: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Beta(1, 1)-mixture confidence sequence of a binomial share after k successes in n trials (elementwise; module
    docstring): the (lower, upper) ends of {p : log B(k + 1, n - k + 1) - k log p - (n - k) log(1 - p) < log(1 /
    delta)}, found by bisection on each side of k / n, where the convex left-hand side is smallest."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    m = n - k
    base = betaln(k + 1, m + 1)
    bound = math.log(1 / delta)

    def inside(p: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            val = base - np.where(k > 0, k * np.log(p), 0.0) - np.where(m > 0, m * np.log1p(-p), 0.0)
        return val < bound

    centre = np.divide(k, n, out=np.full_like(k, 0.5), where=n > 0)
    ends = []
    for edge in (0.0, 1.0):
        # bisection between the centre (inside) and the edge (outside unless the edge itself is inside)
        a, b = centre.copy(), np.full_like(centre, edge)
        edge_in = inside(np.full_like(centre, edge))
        for _ in range(iters):
            mid = (a + b) / 2
            ok = inside(mid)
            a = np.where(ok, mid, a)
            b = np.where(ok, b, mid)
        ends.append(np.where(edge_in, edge, a))
    return ends[0], ends[1]


_VERTEX_LIMIT = 10  # classes up to which the smallest entropy over a box of shares is found exactly


def min_box_entropy(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """[B, C] lower / upper bounds on the shares -> [B] the smallest normalised entropy of a share vector p with
    lo <= p <= hi and sum(p) = 1 (-inf where none exists). Entropy is concave, so the minimum over this polytope is at
    a vertex: every share but one at a bound, the last one fixing the sum. Beyond ``_VERTEX_LIMIT`` classes a cheaper
    lower bound is used: the min-entropy -log(max hi) never exceeds the entropy."""
    b, c = lo.shape
    if c == 1:
        return np.zeros(b)
    if c > _VERTEX_LIMIT:
        return -np.log(np.clip(hi.max(axis=1), 1e-300, 1.0)) / math.log(c)
    best = np.full(b, np.inf)
    tol = 1e-12
    for free in range(c):
        rest = [j for j in range(c) if j != free]
        for corner in itertools.product((0, 1), repeat=c - 1):
            p = np.empty((b, c))
            for j, side in zip(rest, corner):
                p[:, j] = hi[:, j] if side else lo[:, j]
            p[:, free] = 1.0 - p[:, rest].sum(axis=1)
            ok = (p[:, free] >= lo[:, free] - tol) & (p[:, free] <= hi[:, free] + tol)
            q = np.clip(p, 0.0, 1.0)
            with np.errstate(divide="ignore", invalid="ignore"):
                ent = -np.where(q > 0, q * np.log(q), 0.0).sum(axis=1) / math.log(c)
            best = np.where(ok, np.minimum(best, ent), best)
    return np.where(np.isfinite(best), best, -np.inf)


def log_beta_integral(k: np.ndarray, m: np.ndarray, a: float, b: float) -> np.ndarray:
    """log of the integral of q^k (1 - q)^m over [a, b] (elementwise; -inf where it underflows), through the
    regularised incomplete beta function, taking the difference on the side where it does not cancel."""
    lower, upper = betainc(k + 1, m + 1, a), betainc(k + 1, m + 1, b)
    diff = np.where(lower > 0.5, betainc(m + 1, k + 1, 1 - a) - betainc(m + 1, k + 1, 1 - b), upper - lower)
    with np.errstate(divide="ignore"):
        return betaln(k + 1, m + 1) + np.log(np.maximum(diff, 0.0))


def band_tests_settled(k: np.ndarray, m: np.ndarray, e1: float, e2: float, delta: float) -> np.ndarray:
    """Two classes, k and m votes: both one-sided mixture tests at ``delta`` reject, "the class-0 share is >= e2" and
    "it is <= e1", so the share lies inside the band (e1, e2). Each mixes the likelihood ratio against its boundary
    over a uniform prior on the band (e1, e2): every component q < e2 makes a non-negative supermartingale when the
    share is >= e2 (and q > e1 when it is <= e1), so by Ville's inequality each test errs with probability <= delta,
    and since the share cannot be on both sides, so does their conjunction."""
    if not e1 < e2:
        return np.zeros(k.shape, dtype=bool)
    log_mix = log_beta_integral(k, m, e1, e2) - math.log(e2 - e1)
    bound = math.log(1 / delta)
    with np.errstate(divide="ignore", invalid="ignore"):
        below_upper = log_mix - k * math.log(e2) - m * math.log1p(-e2) >= bound
        above_lower = log_mix - k * math.log(e1) - m * math.log1p(-e1) >= bound
    return below_upper & above_lower


def refer_settled(votes: torch.Tensor, drawn: torch.Tensor, refer_above: float | None, delta: float) -> torch.Tensor:
    """[B, C] votes after ``drawn`` [B] draws -> [B] bool: the image is settled inside the referral band, i.e. referred
    whatever its limit, at risk ``delta``. Two classes: the two one-sided band tests (``band_tests_settled``); more
    classes: every share vector the per-class confidence sequences allow has a normalised vote entropy above
    ``refer_above``. A referral that refers everything has ``refer_above`` = -inf and settles at once."""
    b, c = votes.shape
    if refer_above is None:
        raise ValueError("this stopping rule stops on the referral decision: it needs the referral threshold "
                         "(refer_above; score.referral)")
    if not math.isfinite(refer_above):
        return torch.full((b,), refer_above < 0, dtype=torch.bool, device=votes.device)
    if c == 2:
        e2 = band_edge(refer_above)
        k = votes[:, 0].detach().cpu().double().numpy()
        m = votes[:, 1].detach().cpu().double().numpy()
        return torch.from_numpy(band_tests_settled(k, m, 1 - e2, e2, delta)).to(votes.device)
    k = votes.detach().cpu().double().numpy()
    n = np.broadcast_to(drawn.detach().cpu().double().numpy()[:, None], k.shape)
    lo, hi = beta_mixture_cs(k, n, delta / c)
    return torch.from_numpy(min_box_entropy(lo, hi) > refer_above).to(votes.device)


def entropy_clear_of(votes: torch.Tensor, drawn: torch.Tensor, threshold: float, z: float) -> torch.Tensor:
    """[B, C] votes -> [B] bool: the normalised vote entropy so far lies at least ``z`` standard errors from
    ``threshold`` (delta method: the entropy of n categorical draws has variance (sum_c p_c log^2 p_c - H^2) / n in
    nats). Unanimous votes have standard error 0. A heuristic guard, not a confidence statement."""
    n = drawn.to(torch.float64).clamp(min=1)
    p = votes.to(torch.float64) / n[:, None]
    logp = torch.log(p.clamp(min=1e-300))
    h = -(p * logp).sum(1)
    var = ((p * logp * logp).sum(1) - h * h).clamp(min=0) / n
    c = votes.shape[1]
    return (h / math.log(c) - threshold).abs() >= z * var.sqrt() / math.log(c)


@sequential
def futility_stop(votes: torch.Tensor, drawn: torch.Tensor, n_max: int, delta: float, chunk: int,
                  refer_above: float | None = None, decision_z: float = 0.0) -> torch.Tensor:
    """``futility``: the mixture leader test at delta / 2 (with ``decision_z`` > 0 it also waits until the vote
    entropy is that many standard errors from the referral threshold), or the shares settled inside the referral band
    at delta / 2."""
    refer = refer_settled(votes, drawn, refer_above, delta / 2)
    lead = mixture_stop(votes, delta / 2)
    if decision_z > 0 and math.isfinite(refer_above):
        lead &= entropy_clear_of(votes, drawn, refer_above, decision_z)
    return lead | refer


_TESTS: dict[str, Callable[..., torch.Tensor]] = {}


def _test(rule: str) -> Callable[..., torch.Tensor]:
    """The stopping test the registry entry of ``rule`` names (resolved once)."""
    if rule not in _TESTS:
        module, _, attr = stopping_rule(rule).test.partition(":")
        _TESTS[rule] = getattr(importlib.import_module(module), attr)
    return _TESTS[rule]


def should_stop(votes: torch.Tensor, drawn: torch.Tensor, n_max: int, rule: str, delta: float = 0.01,
                chunk: int = 1, refer_above: float | None = None, decision_z: float = 0.0) -> torch.Tensor:
    """[B, C] votes, [B] draws so far -> [B] bool: the test of the stopping rule ``rule`` (``meddiff.rules``), and
    every image stops at ``n_max`` draws. ``chunk`` is how many draws are added between looks (for the Wilson union
    bound over looks); ``refer_above`` is the referral threshold on the normalised vote entropy, for the rules that
    stop on the referral decision (``StoppingRule.uses_referral``), and ``decision_z`` their optional guard on the
    accept / refer decision (``futility_stop``)."""
    return (drawn >= n_max) | _test(rule)(votes, drawn, n_max, delta, chunk, refer_above, decision_z)
