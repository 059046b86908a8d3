"""Selective prediction with a guarantee (meddiff.results.referral): LTT p-values by hand, ties, refer-all, the
guarantee's violation frequency against the naive rule, conformal coverage, and calibration lowering ECE."""

from __future__ import annotations

import json
from math import comb

import numpy as np
import pytest

from meddiff.errors import ResultsError
from meddiff.results import referral as R


def _votes(n: int, n_draws: int = 21, seed: int = 0, a: float = 3.0, b: float = 0.5):
    """Synthetic binary diffusion-classifier rows: each image's draws vote for the true class with probability
    q ~ Beta(a, b); uncertainty is the normalised entropy of the vote shares (discrete, with many ties at 0)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    share = rng.binomial(n_draws, rng.beta(a, b, n)) / n_draws
    p1 = np.where(y == 1, share, 1 - share)
    probs = np.stack([1 - p1, p1], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = -np.nan_to_num(probs * np.log(probs)).sum(axis=1) / np.log(2)
    return u, probs.argmax(axis=1) == y, probs, y


def _binom_cdf(k: int, n: int, p: float) -> float:
    return sum(comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


def test_ltt_p_values_and_threshold_match_a_hand_computation():
    # 30 images at uncertainty 0 with 0 errors, 20 at 0.5 with 2 errors, 50 at 0.9 with 20 errors.
    u = np.r_[np.zeros(30), np.full(20, 0.5), np.full(50, 0.9)]
    correct = np.r_[np.ones(30), np.ones(18), np.zeros(2), np.ones(30), np.zeros(20)].astype(bool)
    # hand: p(0) = 0.9^30 = 0.0424; p(0.5) = P(Binom(50, .1) <= 2) = 0.1117 > delta = 0.1: stop; certify 0.
    assert _binom_cdf(0, 30, 0.1) == pytest.approx(0.9**30)
    t = R.ltt_threshold(u, correct, alpha=0.1, delta=0.1)
    assert t.threshold == 0.0 and t.n_accepted == 30 and t.errors == 0 and t.coverage == pytest.approx(0.3)
    assert t.p_value == pytest.approx(0.9**30)
    assert t.ucb <= 0.1  # duality: a certified threshold's Clopper-Pearson bound is below alpha
    assert R.binomial_p_values(np.array([2]), np.array([50]), 0.1)[0] == pytest.approx(_binom_cdf(2, 50, 0.1))
    # with delta = 0.15 the second block is rejected too (0.1117 <= 0.15), the third is not (20/100 errors)
    t2 = R.ltt_threshold(u, correct, alpha=0.1, delta=0.15)
    assert t2.threshold == 0.5 and t2.n_accepted == 50 and t2.errors == 2
    assert t2.p_value == pytest.approx(_binom_cdf(2, 50, 0.1))
    # the naive rule takes the largest threshold with calibration error <= alpha: 0.5 (2/50 = 4 %), never 0.9 (22 %)
    assert R.naive_threshold(u, correct, 0.1).threshold == 0.5


def test_ties_accept_every_image_at_the_threshold():
    u = np.array([0.0, 0.0, 0.0, 0.3, 0.3, 0.3, 0.3])
    t = R.naive_threshold(u, np.array([1, 1, 1, 1, 1, 1, 0], bool), alpha=0.2)
    assert t.threshold == 0.3 and t.n_accepted == 7  # the whole tied block, not 6 of its images
    assert list(R.decide(u, 0.0)) == ["accept"] * 3 + ["refer"] * 4
    assert list(R.decide(u, None)) == ["refer"] * 7
    # a tied block holding an error can only be taken whole: 5 images, 1 error = 20 % > 15 %
    assert R.naive_threshold(u[2:], np.array([1, 1, 1, 1, 0], bool), alpha=0.15).threshold == 0.0


def test_too_few_images_refer_all():
    # 10 correct images: P(Binom(10, 0.1) <= 0) = 0.349 > 0.1; no threshold can be certified
    t = R.ltt_threshold(np.zeros(10), np.ones(10, bool), alpha=0.1, delta=0.1)
    assert t.refer_all and t.threshold is None and t.coverage == 0.0 and t.p_value == pytest.approx(0.9**10)
    assert R.ltt_threshold(np.zeros(22), np.ones(22, bool), 0.1, 0.1).threshold == 0.0  # 0.9^22 = 0.098


def test_ltt_controls_violations_where_the_naive_rule_fails():
    # 30 % of images are certain (uncertainty 0, never wrong); the others are wrong with probability 0.2 u, so the
    # selective risk rises smoothly through alpha = 5 %: the naive rule stops where the calibration risk touches
    # alpha, i.e. near a threshold whose true risk is alpha, and is on the wrong side about half the time.
    rng = np.random.default_rng(3)
    u = np.where(rng.random(2000) < 0.3, 0.0, rng.integers(1, 50, 2000) / 50.0)
    correct = rng.random(2000) > 0.2 * u
    rows = {r["rule"]: r for r in R.resplit_check(u, correct, alphas=(0.05,), delta=0.1, repeats=200, seed=1)}
    mc = rows["ltt"]["mc_error"]
    assert mc == pytest.approx(2 * np.sqrt(0.1 * 0.9 / 200))
    assert rows["ltt"]["violation_population"] <= 0.1 + mc
    assert rows["ltt"]["mean_coverage"] > 0.5  # not by referring everything
    assert rows["naive"]["violation_population"] > 0.1 + 3 * mc
    assert rows["naive"]["violation_raw"] > 0.1 + 3 * mc
    assert rows["naive"]["mean_coverage"] > rows["ltt"]["mean_coverage"]


def test_multistart_certifies_when_the_most_confident_block_holds_an_error_and_keeps_the_guarantee():
    # 200 certain images (uncertainty 0) of which one is wrong: a single chain starts there, its p-value
    # P(Binom(200, 0.01) <= 1) = 0.40 > delta, so plain LTT refers everything; the chain from 0.2 starts with the
    # 200 + 600 images at or below 0.2 (risk ~1.3 %) and certifies at alpha = 5 %.
    rng = np.random.default_rng(5)
    u = np.concatenate([np.zeros(200), np.full(600, 0.1), rng.integers(3, 10, 400) / 10.0])
    correct = np.concatenate([np.arange(200) > 0, rng.random(600) > 0.02, rng.random(400) > 0.3 * u[800:]])
    single = R.ltt_threshold(u, correct, alpha=0.01, delta=0.1)
    multi = R.ltt_multistart_threshold(u, correct, alpha=0.05, delta=0.1)
    assert single.refer_all and not multi.refer_all and multi.threshold >= 0.2
    assert multi.risk <= 0.05 and multi.ucb <= 0.05 + 0.02
    rows = {r["rule"]: r for r in R.resplit_check(u, correct, alphas=(0.05,), delta=0.1, repeats=200, seed=2)}
    mc = rows["ltt-multistart"]["mc_error"]
    assert rows["ltt-multistart"]["violation_population"] <= 0.1 + mc
    assert rows["ltt-multistart"]["mean_coverage"] > 0.5


def test_guarantee_on_vote_share_rows_and_conformal_coverage():
    u, correct, probs, y = _votes(1000)
    rows = R.resplit_check(u, correct, probs=probs, labels=y, alphas=(0.05,), delta=0.1, repeats=200, seed=0)
    by = {r["rule"]: r for r in rows}
    assert by["ltt"]["violation_population"] <= 0.1 + by["ltt"]["mc_error"]
    assert by["ltt"]["mean_coverage"] > 0.5  # it does accept most images, not refer all
    assert by["naive"]["mean_coverage"] >= by["ltt"]["mean_coverage"]
    conf = by["conformal-lac"]
    assert conf["population_coverage"] >= 0.95 - 2 * conf["coverage_sd"] / np.sqrt(200) - 1e-3
    assert abs(conf["mean_coverage"] - 0.95) < 0.01


def test_conformal_quantile_and_sets():
    s = np.arange(1, 20) / 20  # 19 scores
    assert R.conformal_quantile(s, 0.1) == pytest.approx(s[17])  # ceil(20 * 0.9) = 18th smallest
    assert R.conformal_quantile(s[:5], 0.1) == float("inf")  # ceil(6 * 0.9) = 6 > 5: full sets
    probs = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])
    c = R.Conformal("lac", 0.1, 0.7, 10)  # 1 - 0.25 = 0.75 > 0.7: excluded
    assert c.sets(probs).tolist() == [[True, False, False], [True, True, False]]
    aps = R.conformal_scores(probs, method="aps")
    assert aps[0].tolist() == pytest.approx([0.7, 0.9, 1.0])
    u, _, p, y = _votes(2000, seed=5)
    cal = np.arange(2000) < 1000
    fitted = R.fit_conformal(p[cal], y[cal], 0.1, "aps")
    assert R.set_figures(fitted, p[~cal], y[~cal])["coverage"] >= 0.9 - 0.03


def test_temperature_and_isotonic_reduce_ece_of_overconfident_probabilities():
    rng = np.random.default_rng(0)
    n = 4000
    y = rng.integers(0, 3, n)
    logits = rng.normal(0, 1, (n, 3))
    logits[np.arange(n), y] += 1.0
    probs = np.exp(3.0 * logits)  # 3x too sharp
    probs /= probs.sum(axis=1, keepdims=True)
    cal = np.arange(n) < n // 2
    fig = R.calibration_figures(probs[cal], y[cal], probs[~cal], y[~cal])
    assert fig["temperature"] > 1.5  # it softens the over-confident probabilities
    assert fig["ece_temperature"] < 0.5 * fig["ece_raw"]
    assert fig["ece_isotonic"] < 0.5 * fig["ece_raw"]
    u, _, p, yb = _votes(2000, seed=2)  # binary vote shares with zeros: finite log thanks to the epsilon
    assert np.isfinite(R.fit_temperature(p, yb))


def test_referral_file_round_trip_and_model_check(tmp_path):
    path = tmp_path / "referral.json"
    path.write_text(json.dumps({"rule": "ltt", "alpha": 0.1, "delta": 0.1, "threshold": 0.25, "model_id": "m1"}))
    ref = R.read_referral(path)
    assert ref.fields(0.25)["decision"] == "accept" and ref.fields(0.26)["decision"] == "refer"
    R.check_model(ref, "m1")
    with pytest.raises(ResultsError, match="model_id 'm1'.*'m2'"):
        R.check_model(ref, "m2")
    path.write_text(json.dumps({"rule": "ltt", "alpha": 0.1, "delta": 0.1, "model_id": "m1"}))
    with pytest.raises(ResultsError, match="threshold"):
        R.read_referral(path)
