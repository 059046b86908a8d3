"""Replays of a diffusion classifier's stored per-draw errors (pure numpy): no denoiser call, so they are free.

A results set scored with ``store_draws`` keeps, per image, errors [C, N] (one per class and draw) and the draws' t [N].
From them the decision rules can be recomputed on any subset or weighting of the draws:
  - vote: each draw votes for argmin_c error[c, k]; most (weighted) votes wins; ties go to the lower mean error
    (exactly ``diffusion.engine``);
  - average (Li et al.): argmin_c of the (weighted) mean error;
  - normalised average (diagnostic): the mean over draws of error[c, k] / mean_c error[c, k], i.e. the average with
    every draw rescaled to the same size. It separates *how big* a draw's errors are from *which class* it favours.
and the error target can be changed after the fact, because all targets are the same v-error rescaled per draw:
  ||eps - eps_hat||^2 = alpha^2 ||v - v_hat||^2,  ||x - x_hat||^2 = sigma^2 ||v - v_hat||^2 = exp(-lambda) ||eps - eps_hat||^2.
So votes are identical for every target (the factor is shared by the classes of a draw) and only averages differ.
Scoring-time changes of the t distribution (a range of t, another schedule shift) are importance weights on draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from meddiff.rules import CLASSIFICATION_RULES

TARGETS = ("eps", "x", "v")
RULES = tuple(CLASSIFICATION_RULES)  # vote, average, normalised (meddiff.rules): what weighted_rules computes


@dataclass(frozen=True)
class RulePredictions:
    """Predictions [M] of the three rules and the (weighted) votes and mean errors [M, C] they come from."""

    vote: np.ndarray
    average: np.ndarray
    normalised: np.ndarray
    votes: np.ndarray
    mean_error: np.ndarray

    def of(self, rule: str) -> np.ndarray:
        return getattr(self, rule)


def weighted_rules(errors: np.ndarray, weights: np.ndarray | None = None) -> RulePredictions:
    """The rules on errors [M, C, K] with per-draw weights [M, K] (None: all 1; 0 drops a draw).

    An image whose weights are all zero gets prediction -1 (no draw left to decide).
    """
    e = np.asarray(errors, dtype=np.float64)
    m, c, k = e.shape
    w = np.ones((m, k)) if weights is None else np.asarray(weights, dtype=np.float64)
    total = w.sum(axis=1, keepdims=True)  # [M, 1]
    safe = np.where(total > 0, total, 1.0)
    winners = e.argmin(axis=1)  # [M, K]
    votes = np.zeros((m, c))
    for cls in range(c):
        votes[:, cls] = ((winners == cls) * w).sum(axis=1)
    mean = (e * w[:, None, :]).sum(axis=2) / safe
    scale = e.mean(axis=1, keepdims=True)  # [M, 1, K] per-draw size
    norm = (e / np.maximum(scale, 1e-30) * w[:, None, :]).sum(axis=2) / safe
    top = votes.max(axis=1, keepdims=True)
    vote = np.where(np.isclose(votes, top, rtol=0, atol=1e-9), mean, np.inf).argmin(axis=1)
    empty = total[:, 0] <= 0
    out = [np.where(empty, -1, p) for p in (vote, mean.argmin(axis=1), norm.argmin(axis=1))]
    return RulePredictions(vote=out[0], average=out[1], normalised=out[2], votes=votes, mean_error=mean)


def retarget(errors_eps: np.ndarray, logsnr: np.ndarray, target: str) -> np.ndarray:
    """Per-draw errors of another target from eps errors [M, C, K] and the draws' log-SNR [M, K]:
    x = exp(-lambda) eps-error, v = (1 + exp(-lambda)) eps-error (v-error = eps-error / alpha^2)."""
    lam = np.asarray(logsnr, dtype=np.float64)[:, None, :]
    if target == "eps":
        return np.asarray(errors_eps, dtype=np.float64)
    if target == "x":
        return errors_eps * np.exp(-lam)
    if target == "v":
        return errors_eps * (1.0 + np.exp(-lam))
    raise ValueError(f"target: expected one of {TARGETS}, got {target!r}")


def to_eps_errors(errors: np.ndarray, logsnr: np.ndarray, stored: str) -> np.ndarray:
    """Eps errors from errors stored for target ``stored`` (the inverse of ``retarget``)."""
    lam = np.asarray(logsnr, dtype=np.float64)[:, None, :]
    if stored == "eps":
        return np.asarray(errors, dtype=np.float64)
    if stored == "x":
        return errors * np.exp(lam)
    if stored == "v":
        return errors / (1.0 + np.exp(-lam))
    raise ValueError(f"stored target: expected one of {TARGETS}, got {stored!r}")


def accuracy_of(pred: np.ndarray, y: np.ndarray) -> float:
    return float((np.asarray(pred) == np.asarray(y)).mean()) if len(y) else float("nan")


def n_ablation(errors: np.ndarray, y: np.ndarray, ns: Sequence[int], repeats: int = 20, seed: int = 0,
               rules: Sequence[str] = ("vote", "average")) -> pd.DataFrame:
    """The paper's Fig. 2 from one run: accuracy of each rule on ``repeats`` random subsets of n draws (without
    replacement, the same subset for every image of a repeat and for both rules) for every n in ``ns``.

    Returns long rows: n, repeat, rule, accuracy.
    """
    k = errors.shape[2]
    rng = np.random.default_rng(seed)
    rows = []
    for n in ns:
        if not 1 <= n <= k:
            raise ValueError(f"n_ablation: n = {n} is outside 1..{k} (the stored draws)")
        for r in range(repeats if n < k else 1):
            sub = np.sort(rng.choice(k, size=n, replace=False)) if n < k else np.arange(k)
            preds = weighted_rules(errors[:, :, sub])
            rows += [{"n": n, "repeat": r, "rule": rule, "accuracy": accuracy_of(preds.of(rule), y)} for rule in rules]
    return pd.DataFrame(rows)


def summarize_n_ablation(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and 10/90 % quantiles of accuracy per (n, rule)."""
    g = frame.groupby(["n", "rule"])["accuracy"]
    return pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=0), "q10": g.quantile(0.1), "q90": g.quantile(0.9),
                         "repeats": g.size()}).reset_index()


def t_bucket_accuracy(errors: np.ndarray, t: np.ndarray, y: np.ndarray, edges: Sequence[float]) -> pd.DataFrame:
    """Single-draw accuracy per t bucket: every draw k of image m is a one-draw classifier argmin_c errors[m, :, k].

    Also reports the mean relative class gap |e_1 - e_0| / mean(e) of the draws (how decisive a draw is) and the
    mean eps error (how big it is). Returns rows t_lo, t_hi, draws, accuracy, rel_gap, mean_error.
    """
    correct = errors.argmin(axis=1) == np.asarray(y)[:, None]  # [M, K]
    srt = np.sort(errors, axis=1)
    gap = (srt[:, 1, :] - srt[:, 0, :]) / np.maximum(errors.mean(axis=1), 1e-30)
    size = errors.mean(axis=1)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (t >= lo) & ((t < hi) if hi < edges[-1] else (t <= hi))
        rows.append({"t_lo": lo, "t_hi": hi, "draws": int(m.sum()),
                     "accuracy": float(correct[m].mean()) if m.any() else float("nan"),
                     "rel_gap": float(gap[m].mean()) if m.any() else float("nan"),
                     "mean_error": float(size[m].mean()) if m.any() else float("nan")})
    return pd.DataFrame(rows)


def t_range_ablation(errors: np.ndarray, t: np.ndarray, y: np.ndarray,
                     ranges: Sequence[tuple[float, float]]) -> pd.DataFrame:
    """Each rule on only the draws whose t lies in [lo, hi]: rows t_lo, t_hi, mean_draws, rule, accuracy."""
    rows = []
    for lo, hi in ranges:
        w = ((t >= lo) & (t <= hi)).astype(np.float64)
        preds = weighted_rules(errors, w)
        for rule in RULES:
            rows.append({"t_lo": lo, "t_hi": hi, "mean_draws": float(w.sum(axis=1).mean()), "rule": rule,
                         "accuracy": accuracy_of(preds.of(rule), y)})
    return pd.DataFrame(rows)


def logsnr_density_weights(logsnr: np.ndarray, shift_from: float, shift_to: float) -> np.ndarray:
    """Importance weights that turn draws made under a shifted cosine schedule with shift ``shift_from`` into draws
    under shift ``shift_to`` (t uniform in both). Under t ~ U(0, 1) the log-SNR density of the shifted cosine
    schedule is proportional to 1 / cosh((lambda - shift) / 2) (on its range), so w = cosh((lambda - s_from) / 2) /
    cosh((lambda - s_to) / 2). Draws outside the target's range are rare at these shifts and keep their weight."""
    lam = np.asarray(logsnr, dtype=np.float64)
    return np.cosh((lam - shift_from) / 2.0) / np.cosh((lam - shift_to) / 2.0)


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float]:
    """Paired comparison of two rules on the same images: discordant counts and the exact McNemar p-value
    (two-sided binomial test of a-only vs b-only wins)."""
    from scipy.stats import binomtest

    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {"only_first": only_a, "only_second": only_b, "p_value": float(p)}
