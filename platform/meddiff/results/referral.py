"""Selective prediction with a finite-sample guarantee: when to refer an image to a clinician instead of answering.

An image is *accepted* (the model's answer stands) when its uncertainty is at or below a threshold lambda, else it is
*referred*. The threshold is chosen on a labelled calibration set so that the selective risk -- the error rate among
accepted images, R(lambda) = P(wrong | uncertainty <= lambda) -- is at most ``alpha`` with probability at least
``1 - delta`` over the draw of the calibration set.

Learn then Test (Angelopoulos, Bates, Candes, Jordan, Lei, "Learn then Test: Calibrating predictive algorithms to
achieve risk control", 2021): for each candidate lambda, the calibration images accepted at lambda are, given their
number n, i.i.d. draws of the accepted population, so their error count is Binomial(n, R(lambda)). The exact binomial
tail p = P(Binom(n, alpha) <= errors) is a valid p-value for H0: R(lambda) > alpha. Testing the candidates in a fixed
sequence from the most confident (smallest lambda) upward and stopping at the first non-rejection controls the
family-wise error at ``delta``: P(some accepted lambda has R(lambda) > alpha) <= delta. The largest rejected lambda is
certified; when even the most confident one is not rejected, the certificate is "refer all".

Ties: vote-share entropies take few distinct values (with N draws, at most N + 1 for two classes), so many images share
an uncertainty. A threshold accepts *every* image at or below it; the candidates are the distinct values (or a grid
fixed in advance, ``grid=``). Between two consecutive observed values every threshold accepts the same calibration
images and has the same p-value, so testing the observed values is the fixed-sequence test on any finer grid,
reporting the smallest threshold of the last rejected block (accepting no more than that block's lower end).

``ltt-multistart`` keeps LTT's guarantee with more power when the most confident block holds an error (a single
chain then stops at once and refers everything): one fixed-sequence chain starts at each of ``STARTS`` (uncertainty
0, 0.2, 0.4, 0.6, 0.8, fixed in advance) and tests upward at level delta / 5; a threshold is certified when any chain
rejects it. Each chain's family-wise error is <= delta / 5, so by Bonferroni P(some certified threshold has risk >
alpha) <= delta (the "fallback" idea of multiple testing, Wiens & Dmitrienko, J. Biopharm. Stat. 2005, in its
simplest Bonferroni form). A chain's first test is its start value itself (it accepts every image at or below it).

The *naive* rule (for comparison, no guarantee): the largest threshold whose calibration selective error is <= alpha.

Also here: split-conformal prediction sets over the class probabilities (LAC, score 1 - p_true, Sadinle, Lei &
Wasserman, "Least ambiguous set-valued classifiers with bounded error levels", JASA 2019; APS, Romano, Sesia & Candes,
NeurIPS 2020), temperature scaling (Guo et al., "On calibration of modern neural networks", ICML 2017) and isotonic
regression (Zadrozny & Elkan, KDD 2002) of the probabilities, and ``resplit_check``, the guarantee measured on
random re-splits of a scored results set. Pure numpy/scipy: the dashboard imports it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy.stats import beta as _beta
from scipy.stats import binom

from meddiff.errors import ResultsError
from meddiff.metrics import expected_calibration_error

LTT = "ltt"
LTT_MULTI = "ltt-multistart"
NAIVE = "naive"
# ltt-multistart: fixed-sequence chains start at these uncertainties (fixed before any data is seen), each at delta / 5
STARTS = (0.0, 0.2, 0.4, 0.6, 0.8)
PROB_EPS = 1e-4  # added to vote shares before the log: a share of 0 (no draw voted for the class) has a finite logit


# --- thresholds ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Threshold:
    """A referral threshold chosen on a calibration set.

    rule: "ltt" (certified) or "naive"; threshold: accept iff uncertainty <= it (None: refer every image);
    n: calibration images; n_accepted / errors: accepted calibration images and the wrong ones among them;
    coverage = n_accepted / n; risk = errors / n_accepted (calibration selective risk; 0 when none accepted);
    ucb: the (1 - delta) Clopper-Pearson upper confidence bound on the selective risk at the threshold (<= alpha
    for a certified LTT threshold, the duality of the binomial test); p_value: the binomial p-value at the threshold
    (at the first candidate when nothing was certified)."""

    rule: str
    alpha: float
    delta: float
    threshold: float | None
    n: int
    n_accepted: int
    errors: int
    coverage: float
    risk: float
    ucb: float
    p_value: float

    @property
    def refer_all(self) -> bool:
        return self.threshold is None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "refer_all": self.refer_all}


def _check_risk(alpha: float, delta: float) -> None:
    if not (0.0 < alpha < 1.0 and 0.0 < delta < 1.0):
        raise ResultsError(f"alpha and delta must be in (0, 1); got alpha={alpha}, delta={delta}")


def _inputs(uncertainty, correct) -> tuple[np.ndarray, np.ndarray]:
    u = np.asarray(uncertainty, dtype=np.float64).ravel()
    c = np.asarray(correct, dtype=bool).ravel()
    if u.shape != c.shape:
        raise ResultsError(f"uncertainty ({u.shape[0]} rows) and correct ({c.shape[0]} rows) differ in length")
    if np.isnan(u).any():
        raise ResultsError(f"uncertainty has {int(np.isnan(u).sum())} NaN value(s); pass scored rows only")
    return u, c


def binomial_p_values(errors: np.ndarray, n: np.ndarray, alpha: float) -> np.ndarray:
    """P(Binom(n, alpha) <= errors), the exact p-value of H0: risk > alpha (1 where n = 0: nothing to test)."""
    errors, n = np.asarray(errors), np.asarray(n)
    p = binom.cdf(errors, np.maximum(n, 1), alpha)
    return np.where(n > 0, p, 1.0)


def clopper_pearson_upper(errors: int, n: int, delta: float) -> float:
    """The one-sided (1 - delta) Clopper-Pearson upper bound on a binomial rate (1 when n = 0)."""
    if n <= 0 or errors >= n:
        return 1.0
    return float(_beta.ppf(1.0 - delta, errors + 1, n - errors))


def _chain(p: np.ndarray, tested: np.ndarray, level: float) -> np.ndarray:
    """[R, K] candidates a fixed-sequence chain rejects: the tested ones (ascending) before its first p > level."""
    k = np.arange(p.shape[1])
    stop = (p > level) & tested
    first = np.where(stop.any(axis=1), stop.argmax(axis=1), p.shape[1])
    return tested & (k[None, :] < first[:, None])


def _choose(cum_n: np.ndarray, cum_e: np.ndarray, present: np.ndarray, alpha: float, delta: float,
            rule: str, cand: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised choice over R calibration sets on a common grid of K candidates (ascending values ``cand``).

    cum_n / cum_e [R, K]: calibration images accepted at each candidate and errors among them; present [R, K]: the
    candidate is an observed calibration value (only those are reported; ``ltt-multistart``'s start values are always
    tested). Returns (chosen index [R], -1 = refer all; p-values [R, K])."""
    k = np.arange(cum_n.shape[1])
    p = binomial_p_values(cum_e, cum_n, alpha)
    if rule == LTT:
        ok = _chain(p, present, delta)
    elif rule == LTT_MULTI:
        if cand is None:
            raise ResultsError("ltt-multistart needs the candidate values (they must contain STARTS)")
        ok = np.zeros_like(present)
        for start in STARTS:
            tested = (present & (cand[None, :] > start)) | (cand[None, :] == start)
            ok |= _chain(p, tested, delta / len(STARTS))
    elif rule == NAIVE:
        ok = present & (cum_e <= alpha * cum_n) & (cum_n > 0)
    else:
        raise ResultsError(f"unknown referral rule {rule!r}; expected {LTT!r}, {LTT_MULTI!r} or {NAIVE!r}")
    return np.where(ok, k[None, :], -1).max(axis=1), p


def _threshold(uncertainty, correct, alpha: float, delta: float, grid, rule: str) -> Threshold:
    _check_risk(alpha, delta)
    u, c = _inputs(uncertainty, correct)
    if grid is None:
        cand = np.unique(u)
        present = np.ones(len(cand), dtype=bool)
    else:
        cand = np.unique(np.asarray(grid, dtype=np.float64))
        present = np.ones(len(cand), dtype=bool)  # a fixed grid: every candidate is tested and may be certified
    if rule == LTT_MULTI:  # the chains' start values are candidates too (tested, never "observed")
        cand, present = _with_starts(cand, present)
    idx = np.searchsorted(cand, u, side="left")  # first candidate >= u: the image is accepted from there on
    inside = idx < len(cand)
    cum_n = np.cumsum(np.bincount(idx[inside], minlength=len(cand)))[None, :]
    cum_e = np.cumsum(np.bincount(idx[inside], weights=(~c[inside]).astype(float), minlength=len(cand)))[None, :]
    chosen, p = _choose(cum_n, cum_e.round().astype(np.int64), present[None, :], alpha, delta, rule, cand)
    j = int(chosen[0])
    n = len(u)
    if j < 0:
        first = int(np.argmax(cum_n[0] > 0)) if len(cand) and cum_n[0].any() else 0
        p0 = float(p[0, first]) if len(cand) else 1.0
        return Threshold(rule, alpha, delta, None, n, 0, 0, 0.0, 0.0, 1.0, p0)
    na, e = int(cum_n[0, j]), int(round(cum_e[0, j]))
    # + 0.0: an entropy of -0.0 is written as threshold 0.0
    return Threshold(rule, alpha, delta, float(cand[j]) + 0.0, n, na, e, na / n, e / na if na else 0.0,
                     clopper_pearson_upper(e, na, delta), float(p[0, j]))


def _with_starts(cand: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``cand`` with ``STARTS`` merged in (ascending, unique) and the matching ``present`` (False for added starts)."""
    merged = np.unique(np.concatenate([cand, np.asarray(STARTS, dtype=np.float64)]))
    keep = np.zeros(len(merged), dtype=bool)
    keep[np.searchsorted(merged, cand)] = present
    return merged, keep


def ltt_threshold(uncertainty, correct, alpha: float, delta: float, grid: Sequence[float] | None = None) -> Threshold:
    """The Learn-then-Test threshold: the largest lambda such that every candidate <= lambda rejects
    H0: P(wrong | uncertainty <= lambda) > alpha at level delta (fixed-sequence, most confident first).

    uncertainty [n]: lower = more certain; correct [n] bool: the model's answer was right; grid: candidate thresholds
    fixed in advance (default: the distinct observed values, see the module docstring). P(risk of the returned
    threshold > alpha) <= delta over calibration sets drawn i.i.d. from the population the test images come from.
    """
    return _threshold(uncertainty, correct, alpha, delta, grid, LTT)


def ltt_multistart_threshold(uncertainty, correct, alpha: float, delta: float,
                             grid: Sequence[float] | None = None) -> Threshold:
    """Learn then Test with fixed-sequence chains from each of ``STARTS`` at level delta / len(STARTS) (Bonferroni
    across chains): the largest threshold any chain certifies. Same guarantee as ``ltt_threshold``; it does not
    refer everything just because the most confident images include an error."""
    return _threshold(uncertainty, correct, alpha, delta, grid, LTT_MULTI)


def naive_threshold(uncertainty, correct, alpha: float, delta: float = 0.1,
                    grid: Sequence[float] | None = None) -> Threshold:
    """The naive rule: the largest threshold whose calibration selective error is <= alpha (no guarantee; ``delta``
    only sets the reported upper confidence bound)."""
    return _threshold(uncertainty, correct, alpha, delta, grid, NAIVE)


def choose_threshold(rule: str, uncertainty, correct, alpha: float, delta: float, grid=None) -> Threshold:
    """The threshold of ``rule``, dispatched through ``meddiff.rules.REFERRAL_RULES`` (ConfigError for an unknown
    rule)."""
    import importlib

    from meddiff.rules import referral_rule

    module, func = referral_rule(rule).choose.split(":")
    return getattr(importlib.import_module(module), func)(uncertainty, correct, alpha, delta, grid=grid)


def decide(uncertainty, threshold: float | None) -> np.ndarray:
    """"accept" where uncertainty <= threshold, else "refer" (every image when threshold is None or NaN)."""
    u = np.asarray(uncertainty, dtype=np.float64)
    if threshold is None or threshold != threshold:
        return np.full(u.shape, "refer", dtype=object)
    return np.where(u <= threshold, "accept", "refer").astype(object)


def selective_figures(uncertainty, correct, threshold: float | None) -> dict[str, float]:
    """Coverage, selective risk and counts of a threshold on labelled rows (risk NaN when nothing is accepted)."""
    u, c = _inputs(uncertainty, correct)
    acc = np.zeros(len(u), dtype=bool) if threshold is None else u <= threshold
    na = int(acc.sum())
    return {"n": int(len(u)), "n_accepted": na, "errors": int((~c[acc]).sum()),
            "coverage": na / len(u) if len(u) else float("nan"),
            "risk": float((~c[acc]).mean()) if na else float("nan")}


def risk_coverage_curve(uncertainty, correct) -> dict[str, np.ndarray]:
    """Coverage and selective risk at every distinct uncertainty (ties accepted together): {"threshold", "coverage",
    "risk", "n_accepted"}."""
    u, c = _inputs(uncertainty, correct)
    cand, idx = np.unique(u, return_inverse=True)
    n = np.cumsum(np.bincount(idx, minlength=len(cand)))
    e = np.cumsum(np.bincount(idx, weights=(~c).astype(float), minlength=len(cand)))
    return {"threshold": cand, "coverage": n / max(len(u), 1), "risk": e / np.maximum(n, 1), "n_accepted": n}


# --- conformal prediction sets -------------------------------------------------------------------------------------


def _probs_labels(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64).ravel()
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ResultsError(f"probabilities of shape {p.shape} do not match {y.shape[0]} labels; expected [n, classes]")
    if len(y) and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ResultsError(f"labels must be class indices in [0, {p.shape[1]}); got {y.min()}..{y.max()}")
    return p, y


def conformal_scores(probs, labels=None, method: str = "lac") -> np.ndarray:
    """Nonconformity scores: [n] of the true class when ``labels`` are given, else [n, C] of every class.

    lac: 1 - p_c (Sadinle et al. 2019). aps: the probability mass of the classes at least as likely as c (p_c'  > p_c,
    plus p_c itself; deterministic APS, Romano et al. 2020)."""
    p = np.asarray(probs, dtype=np.float64)
    if method == "lac":
        s = 1.0 - p
    elif method == "aps":
        s = (p[:, None, :] * (p[:, None, :] > p[:, :, None])).sum(axis=2) + p
    else:
        raise ResultsError(f"unknown conformal score {method!r}; expected 'lac' or 'aps'")
    if labels is None:
        return s
    y = np.asarray(labels, dtype=np.int64)
    return s[np.arange(len(y)), y]


def conformal_quantile(scores, alpha: float) -> float:
    """qhat: the ceil((n + 1)(1 - alpha))-th smallest calibration score (inf when that exceeds n: every set is full)."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    k = int(np.ceil((len(s) + 1) * (1.0 - alpha)))
    return float("inf") if k > len(s) or k < 1 else float(s[k - 1])


@dataclass(frozen=True)
class Conformal:
    """A split-conformal set predictor: the sets {c : score(x, c) <= qhat} contain the true class with probability
    >= 1 - alpha over exchangeable calibration and test images."""

    method: str
    alpha: float
    qhat: float
    n: int

    def sets(self, probs) -> np.ndarray:
        """[n, C] bool: class c is in the image's set."""
        return conformal_scores(probs, method=self.method) <= self.qhat

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "alpha": self.alpha, "qhat": None if np.isinf(self.qhat) else self.qhat,
                "n": self.n}


def fit_conformal(probs, labels, alpha: float, method: str = "lac") -> Conformal:
    p, y = _probs_labels(probs, labels)
    if not 0.0 < alpha < 1.0:
        raise ResultsError(f"conformal alpha must be in (0, 1); got {alpha}")
    return Conformal(method, alpha, conformal_quantile(conformal_scores(p, y, method), alpha), len(y))


def set_figures(conformal: Conformal, probs, labels) -> dict[str, float]:
    """Empirical coverage (true class in the set) and mean set size on labelled rows."""
    p, y = _probs_labels(probs, labels)
    sets = conformal.sets(p)
    return {"coverage": float(sets[np.arange(len(y)), y].mean()) if len(y) else float("nan"),
            "mean_set_size": float(sets.sum(axis=1).mean()) if len(y) else float("nan")}


# --- calibrated probabilities --------------------------------------------------------------------------------------


def _log_probs(probs) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    return np.log(p + PROB_EPS)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(probs, labels, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature T minimising the calibration NLL of softmax(log(p + eps) / T) (Guo et al. 2017)."""
    from scipy.optimize import minimize_scalar

    p, y = _probs_labels(probs, labels)
    z = _log_probs(p)
    rows = np.arange(len(y))

    def nll(log_t: float) -> float:
        s = z / np.exp(log_t)
        s = s - s.max(axis=1, keepdims=True)
        return float(-(s[rows, y] - np.log(np.exp(s).sum(axis=1))).mean())

    res = minimize_scalar(nll, bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded",
                          options={"xatol": 1e-4})
    return float(np.exp(res.x))


def apply_temperature(probs, temperature: float) -> np.ndarray:
    return _softmax(_log_probs(probs) / temperature)


@dataclass(frozen=True)
class Isotonic:
    """Isotonic maps of P(class c) (binary: class 1 only, P(class 0) = 1 - it; multi-class: one-vs-rest, rows
    renormalised; a row whose maps all give 0 becomes uniform). xs/ys: each map's breakpoints."""

    xs: tuple[tuple[float, ...], ...]
    ys: tuple[tuple[float, ...], ...]
    num_classes: int

    def apply(self, probs) -> np.ndarray:
        p = np.asarray(probs, dtype=np.float64)
        if self.num_classes == 2:
            q1 = np.interp(p[:, 1], self.xs[0], self.ys[0])
            return np.stack([1.0 - q1, q1], axis=1)
        q = np.stack([np.interp(p[:, c], self.xs[c], self.ys[c]) for c in range(self.num_classes)], axis=1)
        tot = q.sum(axis=1, keepdims=True)
        return np.where(tot > 0, q / np.where(tot > 0, tot, 1.0), 1.0 / self.num_classes)


def fit_isotonic(probs, labels) -> Isotonic:
    from sklearn.isotonic import IsotonicRegression

    p, y = _probs_labels(probs, labels)
    classes = [1] if p.shape[1] == 2 else list(range(p.shape[1]))
    xs, ys = [], []
    for c in classes:
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p[:, c], (y == c).astype(float))
        xs.append(tuple(float(v) for v in iso.X_thresholds_))
        ys.append(tuple(float(v) for v in iso.y_thresholds_))
    return Isotonic(tuple(xs), tuple(ys), p.shape[1])


def ece_of(probs, labels, n_bins: int = 10) -> float:
    """ECE of the top-class probability (``meddiff.metrics.expected_calibration_error``)."""
    p, y = _probs_labels(probs, labels)
    return expected_calibration_error(p.argmax(axis=1) == y, p.max(axis=1), n_bins)


def calibration_figures(cal_probs, cal_labels, test_probs, test_labels) -> dict[str, float]:
    """Temperature and isotonic fitted on the calibration rows; ECE of the test rows before and after each."""
    t = fit_temperature(cal_probs, cal_labels)
    iso = fit_isotonic(cal_probs, cal_labels)
    return {"temperature": t, "ece_raw": ece_of(test_probs, test_labels),
            "ece_temperature": ece_of(apply_temperature(test_probs, t), test_labels),
            "ece_isotonic": ece_of(iso.apply(test_probs), test_labels)}


# --- the guarantee, measured ---------------------------------------------------------------------------------------


def group_halves(groups, repeats: int, seed: int = 0) -> np.ndarray:
    """[repeats, n] bool: row in the calibration half. Each repeat shuffles the distinct groups (seeded) and puts the
    first half of them (floor) in calibration, so no group (patient, lesion) is on both sides."""
    g = np.asarray(groups).astype(str)
    _, gi = np.unique(g, return_inverse=True)
    n_groups = gi.max() + 1 if len(gi) else 0
    rng = np.random.default_rng(seed)
    ranks = np.argsort(np.argsort(rng.random((repeats, n_groups)), axis=1), axis=1)
    return (ranks < n_groups // 2)[:, gi]


def _per_candidate(weights: np.ndarray, idx: np.ndarray, k: int) -> np.ndarray:
    """[R, n] row weights -> [R, K] their sums per candidate (``idx`` [n]: each row's candidate)."""
    r = weights.shape[0]
    flat = (np.arange(r)[:, None] * k + idx[None, :]).ravel()
    return np.bincount(flat, weights=weights.ravel(), minlength=r * k).reshape(r, k)


def _counts(weights: np.ndarray, idx: np.ndarray, k: int, wrong: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative accepted counts and errors per candidate for R weightings of the rows ([R, n] -> [R, K])."""
    n = np.cumsum(_per_candidate(weights, idx, k), axis=1)
    e = np.cumsum(_per_candidate(weights * wrong[None, :], idx, k), axis=1)
    return np.rint(n).astype(np.int64), np.rint(e).astype(np.int64)


def resplit_check(uncertainty, correct, groups=None, probs=None, labels=None, alphas=(0.05, 0.10),
                  delta: float = 0.1, repeats: int = 200, seed: int = 0, conformal: str = "lac") -> list[dict[str, Any]]:
    """The guarantee measured on a scored results set. Returns one row per (alpha, rule) as dicts.

    raw: ``repeats`` seeded group-aware 50/50 re-splits; the threshold is chosen on the calibration half and the
        test half's coverage and selective risk are measured; ``violation_raw`` is the share of re-splits whose test
        risk exceeds alpha (a re-split whose threshold refers every image counts as no violation; ``refer_all`` gives
        how often that happened). The test half's risk is itself a noisy estimate (a threshold whose true risk is exactly
        alpha "violates" about half the time), so this frequency over-states violations.
    population: the whole set is taken as the population; calibration sets of the same size as the half are drawn
        from its rows with replacement (i.i.d., as the guarantee assumes), and the chosen threshold's exact risk on
        the whole set is compared with alpha. For LTT, ``violation_population`` <= delta must hold up to the Monte
        Carlo error ``mc_error`` = 2 sqrt(delta (1 - delta) / repeats).
    With ``probs`` and ``labels``, a "conformal" row per alpha: mean coverage of the sets on the test halves (and its
    standard deviation, and the mean over population draws), mean set size.
    """
    u, c = _inputs(uncertainty, correct)
    n = len(u)
    if n < 4:
        raise ResultsError(f"the re-split check needs at least 4 scored rows; got {n}")
    groups = np.arange(n) if groups is None else np.asarray(groups)
    cand, _ = _with_starts(np.unique(u), np.ones(len(np.unique(u)), dtype=bool))
    idx = np.searchsorted(cand, u, side="left")
    k = len(cand)
    wrong = (~c).astype(float)
    cal = group_halves(groups, repeats, seed).astype(float)
    test = 1.0 - cal
    rng = np.random.default_rng(seed + 1)
    n_cal = n // 2
    draws = rng.integers(0, n, (repeats, n_cal))
    boot = np.zeros((repeats, n))
    np.add.at(boot, (np.repeat(np.arange(repeats), n_cal), draws.ravel()), 1.0)
    cal_n, cal_e = _counts(cal, idx, k, wrong)
    test_n, test_e = _counts(test, idx, k, wrong)
    boot_n, boot_e = _counts(boot, idx, k, wrong)
    pop_n, pop_e = _counts(np.ones((1, n)), idx, k, wrong)
    mc = 2.0 * np.sqrt(delta * (1.0 - delta) / repeats)
    out: list[dict[str, Any]] = []
    # only values observed in a calibration set are its candidates (as in ``ltt_threshold``)
    cal_present, boot_present = _per_candidate(cal, idx, k) > 0, _per_candidate(boot, idx, k) > 0
    r = np.arange(repeats)
    for alpha in alphas:
        _check_risk(alpha, delta)
        for rule in (LTT, LTT_MULTI, NAIVE):
            j, _ = _choose(cal_n, cal_e, cal_present, alpha, delta, rule, cand)
            tn = np.where(j >= 0, test_n[r, np.maximum(j, 0)], 0)
            te = np.where(j >= 0, test_e[r, np.maximum(j, 0)], 0)
            n_test = test.sum(axis=1)
            risk = np.where(tn > 0, te / np.maximum(tn, 1), np.nan)
            jb, _ = _choose(boot_n, boot_e, boot_present, alpha, delta, rule, cand)
            pn = np.where(jb >= 0, pop_n[0, np.maximum(jb, 0)], 0)
            pe = np.where(jb >= 0, pop_e[0, np.maximum(jb, 0)], 0)
            prisk = np.where(pn > 0, pe / np.maximum(pn, 1), 0.0)
            out.append({
                "alpha": alpha, "delta": delta, "rule": rule, "repeats": repeats, "n": n,
                "violation_raw": float(np.mean(np.nan_to_num(risk, nan=0.0) > alpha)),
                "violation_population": float(np.mean(prisk > alpha)),
                "mc_error": float(mc),
                "mean_coverage": float(np.mean(tn / n_test)),
                "mean_risk": float(np.nanmean(risk)) if np.isfinite(risk).any() else float("nan"),
                "population_coverage": float(np.mean(pn / n)),
                "population_risk": float(np.mean(prisk[pn > 0])) if (pn > 0).any() else float("nan"),
                "refer_all": float(np.mean(j < 0)),
            })
        if probs is not None and labels is not None:
            out.append(_conformal_check(probs, labels, cal > 0, draws, alpha, delta, repeats, n, conformal))
    return out


def _conformal_check(probs, labels, cal: np.ndarray, draws: np.ndarray, alpha: float, delta: float, repeats: int,
                     n: int, method: str) -> dict[str, Any]:
    p, y = _probs_labels(probs, labels)
    true_s = conformal_scores(p, y, method)
    all_s = conformal_scores(p, method=method)
    cov, size, pcov, psize = (np.empty(repeats) for _ in range(4))
    for i in range(repeats):
        q = conformal_quantile(true_s[cal[i]], alpha)
        t = ~cal[i]
        cov[i] = np.mean(true_s[t] <= q)
        size[i] = np.mean((all_s[t] <= q).sum(axis=1))
        qb = conformal_quantile(true_s[draws[i]], alpha)
        pcov[i] = np.mean(true_s <= qb)
        psize[i] = np.mean((all_s <= qb).sum(axis=1))
    return {"alpha": alpha, "delta": delta, "rule": f"conformal-{method}", "repeats": repeats, "n": n,
            "mean_coverage": float(cov.mean()), "coverage_sd": float(cov.std(ddof=1)),
            "coverage_below_target": float(np.mean(cov < 1.0 - alpha)),
            "population_coverage": float(pcov.mean()), "mean_set_size": float(size.mean()),
            "population_set_size": float(psize.mean())}


# --- referral.json -------------------------------------------------------------------------------------------------

REFERRAL_KEYS = ("rule", "alpha", "delta", "threshold", "model_id")


@dataclass(frozen=True)
class Referral:
    """What ``meddiff score --referral`` and ``meddiff serve --referral`` apply (read from referral.json)."""

    rule: str
    alpha: float
    delta: float
    threshold: float | None
    model_id: str | None
    path: str = ""

    def decide(self, uncertainty) -> np.ndarray:
        return decide(uncertainty, self.threshold)

    def fields(self, uncertainty: float | None) -> dict[str, Any]:
        """The results columns of one ok row: decision, refer_threshold, risk_alpha, risk_delta."""
        d = "refer" if uncertainty is None or self.threshold is None or not uncertainty <= self.threshold \
            else "accept"
        return {"decision": d, "refer_threshold": self.threshold, "risk_alpha": self.alpha, "risk_delta": self.delta}

    def record(self) -> dict[str, Any]:
        """meta.json's ``referral`` record."""
        return {"path": self.path, "rule": self.rule, "alpha": self.alpha, "delta": self.delta,
                "threshold": self.threshold, "model_id": self.model_id}


def read_referral(path: str | Path) -> Referral:
    """referral.json (written by ``meddiff calibrate``) -> a Referral; ResultsError naming the file and key."""
    p = Path(path)
    if not p.is_file():
        raise ResultsError(f"{p}: referral file not found (write one with `meddiff calibrate RESULTS --out {p.name}`)")
    try:
        raw = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{p}: not valid JSON ({exc})") from exc
    missing = [k for k in REFERRAL_KEYS if k not in raw]
    if missing:
        raise ResultsError(f"{p}: referral file lacks key(s) {missing}; expected {list(REFERRAL_KEYS)}")
    thr = raw["threshold"]
    if thr is not None and not isinstance(thr, (int, float)):
        raise ResultsError(f"{p}: threshold is {thr!r}; expected a number or null (refer all)")
    for key in ("alpha", "delta"):
        if not isinstance(raw[key], (int, float)) or not 0.0 < raw[key] < 1.0:
            raise ResultsError(f"{p}: {key} is {raw[key]!r}; expected a number in (0, 1)")
    return Referral(str(raw["rule"]), float(raw["alpha"]), float(raw["delta"]),
                    None if thr is None else float(thr), raw["model_id"], str(p))


def check_model(referral: Referral, model_id: str | None) -> None:
    """ResultsError when ``referral`` was calibrated on another model's results."""
    if referral.model_id != model_id:
        raise ResultsError(f"{referral.path}: referral threshold was calibrated for model_id {referral.model_id!r}, "
                           f"but this checkpoint is {model_id!r}; calibrate on this model's results "
                           f"(`meddiff calibrate`)")
