"""The report's metrics against hand-computed values: confusion matrix, sensitivity/specificity, AURC, ECE, bootstrap."""

import numpy as np
import pytest

from meddiff import metrics as M

Y = np.array([0, 0, 1, 1, 1])
P = np.array([0, 1, 1, 1, 0])


def test_confusion_and_rates():
    assert M.confusion_matrix(Y, P, 2).tolist() == [[1, 1], [1, 2]]
    r = M.sensitivity_specificity(Y, P)
    assert r["sensitivity"] == pytest.approx(2 / 3) and r["recall"] == pytest.approx(2 / 3)
    assert r["specificity"] == pytest.approx(1 / 2)
    assert r["precision"] == pytest.approx(2 / 3)
    assert np.isnan(M.sensitivity_specificity(np.array([0, 0]), np.array([0, 0]))["sensitivity"])
    assert M.confusion_matrix(np.array([2, 0]), np.array([1, 0]), 3).tolist() == [[1, 0, 0], [0, 0, 0], [0, 1, 0]]


def test_aurc_by_hand():
    correct = np.array([1, 0, 1, 0])
    unc = np.array([0.1, 0.2, 0.3, 0.4])  # order 0, 1, 2, 3 -> accuracies 1, 1/2, 2/3, 1/2
    assert M.aurc(correct, unc) == pytest.approx(np.mean([0, 1 / 2, 1 / 3, 1 / 2]))
    # a perfect ranking (errors last) has the smallest AURC of any order of the same images
    assert M.aurc(correct, np.array([0.1, 0.9, 0.2, 0.8])) == pytest.approx(np.mean([0, 0, 1 / 3, 1 / 2]))
    assert M.aurc(np.ones(3), np.zeros(3)) == 0.0


def test_coverage_is_monotone_and_accuracy_ends_at_overall():
    rng = np.random.default_rng(1)
    correct, unc = rng.random(200) < 0.7, rng.random(200).round(1)  # many ties
    curve = M.coverage_curve(correct, unc, rng.random(200))
    assert np.all(np.diff(curve["coverage"]) > 0) and curve["coverage"].iloc[-1] == 1.0
    assert np.all(np.diff(curve["threshold"]) >= 0)  # filtering by a threshold keeps the most certain first
    assert curve["accuracy"].iloc[-1] == pytest.approx(correct.mean())
    t = M.selective_table(correct, unc)
    assert set(t) == {"acc@100", "acc@80", "acc@55"} and t["acc@100"] == pytest.approx(correct.mean())


def test_ece_by_hand():
    # confidences 0.55, 0.65 -> bin (0.5, 0.6] and (0.6, 0.7]; 0.95, 1.0 -> bin (0.9, 1.0]
    correct = np.array([1, 0, 1, 1])
    conf = np.array([0.55, 0.65, 0.95, 1.0])
    # |1 - 0.55| * 1/4 + |0 - 0.65| * 1/4 + |1 - 0.975| * 2/4
    assert M.expected_calibration_error(correct, conf) == pytest.approx(0.45 / 4 + 0.65 / 4 + 0.025 / 2)
    bins = M.calibration_bins(correct, conf)
    assert bins["count"].tolist() == [0, 0, 0, 0, 0, 1, 1, 0, 0, 2]
    assert M.expected_calibration_error(np.array([1, 1]), np.array([1.0, 1.0])) == 0.0
    assert bins.loc[0, "lo"] == 0.0 and M.calibration_bins([1], [0.0])["count"].iloc[0] == 1


def test_bootstrap_ci_contains_the_estimate_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    pred = np.where(rng.random(400) < 0.8, y, 1 - y)
    lo, hi = M.bootstrap_ci(M.accuracy, y, pred, n_boot=300)
    acc = M.accuracy(y, pred)
    assert lo < acc < hi and 0.03 < hi - lo < 0.12  # about +-1.96 sqrt(0.16 / 400) = +-0.039
    lo2, hi2 = M.bootstrap_ci(M.accuracy, y[:40], pred[:40], n_boot=300)
    assert hi2 - lo2 > hi - lo
    assert M.bootstrap_ci(M.accuracy, y, pred, n_boot=50, seed=3) == M.bootstrap_ci(M.accuracy, y, pred, n_boot=50, seed=3)
    # constant data: a zero-width interval; AUC on single-class resamples is dropped, not NaN
    assert M.bootstrap_ci(M.accuracy, np.ones(5), np.ones(5), n_boot=20) == (1.0, 1.0)
    scores = np.stack([1 - y, y], 1).astype(float)
    assert M.bootstrap_ci(M.roc_auc, y[:6], scores[:6], n_boot=50)[0] == pytest.approx(1.0)


def test_fast_binary_metrics_equal_sklearn():
    rng = np.random.default_rng(2)
    for _ in range(5):
        y = rng.integers(0, 2, 60)
        p = rng.integers(0, 2, 60)
        s = np.round(rng.random((60, 2)), 1)  # ties
        assert M.binary_f1(y, p) == pytest.approx(M.f1(y, p))
        assert M.binary_auc(y, s) == pytest.approx(M.roc_auc(y, s))
    assert np.isnan(M.binary_auc(np.ones(3), np.ones((3, 2))))
    assert M.binary_f1(np.zeros(3), np.zeros(3)) == 0.0
