"""How few draws could any stopping rule need? Wald's lower bound on the expected sample size, per image.

A sequential test that, at risk delta, must tell a vote share p from a share p0 where the decision changes needs on
average at least about log(1 / delta) / KL(p || p0) draws when the share is p (Wald 1945, "Sequential tests of
statistical hypotheses", Ann. Math. Statist.; the bound E_p[N] >= ((1 - b) log((1 - b) / a) + b log(b / (1 - a))) /
KL(p || p0) with errors a = delta, b -> 0). A leader-only rule must tell p from 1/2; a rule that may also stop as
"refer" needs, inside the referral band (e1, e2), only the cheaper of telling p from 1/2 and telling p from the nearer
band edge. Evaluated at each image's full-N vote share (two classes), capped at N, this is the fewest draws per image
that any anytime-valid rule on independent votes can expect, so the benchmark prints it next to what the rules
achieve: a target above it cannot be met by a better test, only by more informative draws or another model.
"""

from __future__ import annotations

import math

import numpy as np

from meddiff.diffusion.uncertainty import band_edge


def kl_bernoulli(p: float, q: float) -> float:
    """KL(Bernoulli(p) || Bernoulli(q)) in nats."""
    out = 0.0
    if p > 0:
        out += p * math.log(p / q)
    if p < 1:
        out += (1 - p) * math.log((1 - p) / (1 - q))
    return out


def wald_draws(shares: np.ndarray, delta: float, n_max: int, refer_above: float | None = None) -> np.ndarray:
    """[B] class-0 vote shares of two-class images -> [B] Wald's lower bound on the mean draws to settle each image at
    risk ``delta`` (capped at ``n_max``): its leader, or, with ``refer_above``, its membership of the referral band."""
    log_term = math.log(1 / delta)
    e2 = band_edge(refer_above) if refer_above is not None else None
    out = np.empty(len(shares))
    for i, p in enumerate(np.clip(np.asarray(shares, dtype=np.float64), 1e-9, 1 - 1e-9)):
        need = log_term / kl_bernoulli(p, 0.5) if abs(p - 0.5) > 1e-9 else math.inf
        if e2 is not None and 1 - e2 < p < e2:
            need = min(need, log_term / min(kl_bernoulli(p, e2), kl_bernoulli(p, 1 - e2)))
        out[i] = min(need, n_max)
    return out
