"""Pure metric functions over labels, predictions, scores and uncertainties (numpy in, numbers or frames out).

scikit-learn computes what it already has (F1, ROC AUC); the coverage functions are the paper's accuracy-vs-uncertainty
analysis: sort images from most to least certain, keep the most certain fraction, measure accuracy on it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score, roc_auc_score



def accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    y, pred = np.asarray(y), np.asarray(pred)
    return float((y == pred).mean()) if len(y) else float("nan")


def f1(y: np.ndarray, pred: np.ndarray, num_classes: int = 2) -> float:
    """Binary F1 of class 1 (the disease class in every meddiff task) for two classes, macro F1 otherwise."""
    if len(y) == 0:
        return float("nan")
    if num_classes == 2:
        return float(f1_score(y, pred, pos_label=1, average="binary", zero_division=0))
    return float(f1_score(y, pred, average="macro", labels=list(range(num_classes)), zero_division=0))


def roc_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC from per-class scores [N, C] (binary: the class-1 column; multi-class: one-vs-rest macro).

    NaN when only one class is present (AUC is undefined there).
    """
    y = np.asarray(y)
    scores = np.asarray(scores, dtype=np.float64)
    if len(np.unique(y)) < 2:
        return float("nan")
    if scores.shape[1] == 2:
        return float(roc_auc_score(y, scores[:, 1]))
    p = scores / scores.sum(axis=1, keepdims=True)
    return float(roc_auc_score(y, p, multi_class="ovr", labels=list(range(scores.shape[1]))))


def error_scores(mean_error: np.ndarray) -> np.ndarray:
    """Per-class scores of the average-error rule: softmax of -mean_error scaled by its per-image mean ([N, C])."""
    e = np.asarray(mean_error, dtype=np.float64)
    logits = -e / np.maximum(e.mean(axis=1, keepdims=True), 1e-12)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def error_margin(mean_error: np.ndarray) -> np.ndarray:
    """Relative gap between the best and second-best class mean error ([N]); larger = more certain."""
    e = np.sort(np.asarray(mean_error, dtype=np.float64), axis=1)
    return (e[:, 1] - e[:, 0]) / np.maximum(e.sum(axis=1), 1e-12)


def certainty_order(uncertainty: np.ndarray, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Indices from most to least certain: ascending uncertainty, ties broken by descending ``tiebreak`` (e.g. the
    error margin; many images have uncertainty exactly 0 when every draw votes the same way), then by index."""
    u = np.asarray(uncertainty, dtype=np.float64)
    tb = np.zeros_like(u) if tiebreak is None else -np.asarray(tiebreak, dtype=np.float64)
    return np.lexsort((np.arange(len(u)), tb, u))


def coverage_curve(correct: np.ndarray, uncertainty: np.ndarray, tiebreak: np.ndarray | None = None) -> pd.DataFrame:
    """Accuracy of the k most certain images for k = 1..N.

    Returns a frame with columns coverage (k / N), accuracy, threshold (the uncertainty of the k-th image), k.
    """
    order = certainty_order(uncertainty, tiebreak)
    c = np.asarray(correct, dtype=np.float64)[order]
    k = np.arange(1, len(c) + 1)
    return pd.DataFrame({
        "k": k,
        "coverage": k / max(len(c), 1),
        "accuracy": np.cumsum(c) / k,
        "threshold": np.asarray(uncertainty, dtype=np.float64)[order],
    })


def accuracy_at_coverage(
    correct: np.ndarray, uncertainty: np.ndarray, coverage: float, tiebreak: np.ndarray | None = None
) -> float:
    """Accuracy on the ``coverage`` fraction of most certain images (at least one image)."""
    n = len(correct)
    if n == 0:
        return float("nan")
    k = max(1, int(round(coverage * n)))
    order = certainty_order(uncertainty, tiebreak)[:k]
    return float(np.asarray(correct, dtype=np.float64)[order].mean())


# --- classification details, selective prediction, calibration, confidence intervals (report) -------------------------


def confusion_matrix(y: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """[C, C] counts, rows = true class, columns = predicted class (scikit-learn's convention)."""
    from sklearn.metrics import confusion_matrix as _cm

    return _cm(np.asarray(y), np.asarray(pred), labels=list(range(num_classes)))


def sensitivity_specificity(y: np.ndarray, pred: np.ndarray, positive: int = 1) -> dict[str, float]:
    """Binary rates with ``positive`` as the disease class: sensitivity (recall) = TP / (TP + FN), specificity =
    TN / (TN + FP), precision (PPV) = TP / (TP + FP). NaN where a denominator is zero."""
    y, pred = np.asarray(y) == positive, np.asarray(pred) == positive
    tp, fn = int((y & pred).sum()), int((y & ~pred).sum())
    tn, fp = int((~y & ~pred).sum()), int((~y & pred).sum())
    ratio = lambda a, b: a / b if b else float("nan")
    return {"sensitivity": ratio(tp, tp + fn), "specificity": ratio(tn, tn + fp), "precision": ratio(tp, tp + fp),
            "recall": ratio(tp, tp + fn)}


def aurc(correct: np.ndarray, uncertainty: np.ndarray, tiebreak: np.ndarray | None = None) -> float:
    """Area under the risk-coverage curve: the mean over k = 1..N of the error rate of the k most certain images
    (Geifman & El-Yaniv). Lower is better; a perfect ranking of an accuracy-a classifier reaches its minimum."""
    if len(correct) == 0:
        return float("nan")
    curve = coverage_curve(correct, uncertainty, tiebreak)
    return float((1.0 - curve["accuracy"]).mean())


def calibration_bins(correct: np.ndarray, confidence: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Reliability table: confidence in [0, 1] cut into ``n_bins`` equal bins (lo, hi] (the first also holds 0).

    Columns lo, hi, count, confidence (mean), accuracy (mean of ``correct``); empty bins have count 0 and NaNs.
    """
    conf = np.asarray(confidence, dtype=np.float64)
    corr = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        m = idx == b
        rows.append({"lo": edges[b], "hi": edges[b + 1], "count": int(m.sum()),
                     "confidence": float(conf[m].mean()) if m.any() else float("nan"),
                     "accuracy": float(corr[m].mean()) if m.any() else float("nan")})
    return pd.DataFrame(rows)


def expected_calibration_error(correct: np.ndarray, confidence: np.ndarray, n_bins: int = 10) -> float:
    """ECE = sum over bins of (count / N) |accuracy - mean confidence| (Guo et al. 2017). For a diffusion classifier
    the confidence is the winning class's vote share; for a baseline its top softmax probability."""
    bins = calibration_bins(correct, confidence, n_bins)
    n = bins["count"].sum()
    if n == 0:
        return float("nan")
    full = bins[bins["count"] > 0]
    return float((full["count"] / n * (full["accuracy"] - full["confidence"]).abs()).sum())


def bootstrap_ci(
    metric,
    *arrays: np.ndarray,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``metric(*arrays)`` over images (resampled with replacement).

    ``arrays`` share their first axis (e.g. y and pred, or y and scores). Resamples where the metric is NaN (e.g. AUC
    on a single-class resample) are dropped. Returns (lo, hi); (NaN, NaN) without data.
    """
    arrays = tuple(np.asarray(a) for a in arrays)
    n = len(arrays[0])
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    for i in range(n_boot):
        idx = rng.integers(0, n, n)
        stats[i] = metric(*(a[idx] for a in arrays))
    stats = stats[~np.isnan(stats)]
    if len(stats) == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0
    return float(np.quantile(stats, tail)), float(np.quantile(stats, 1.0 - tail))


def selective_table(
    correct: np.ndarray, uncertainty: np.ndarray, coverages=(1.0, 0.8, 0.55), tiebreak: np.ndarray | None = None
) -> dict[str, float]:
    """Accuracy at the given coverages (the paper's Fig. 3 read at fixed points): {"acc@100": ..., "acc@80": ...}."""
    return {f"acc@{int(round(c * 100))}": accuracy_at_coverage(correct, uncertainty, c, tiebreak) for c in coverages}


def binary_f1(y: np.ndarray, pred: np.ndarray) -> float:
    """F1 of class 1 in plain numpy (equals ``f1`` for two classes; fast enough for thousands of bootstrap resamples)."""
    y, pred = np.asarray(y) == 1, np.asarray(pred) == 1
    tp = float((y & pred).sum())
    denom = 2 * tp + float((~y & pred).sum()) + float((y & ~pred).sum())
    return 2 * tp / denom if denom else 0.0


def binary_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of the class-1 column by the Mann-Whitney rank statistic (ties count 1/2); equals ``roc_auc`` for two
    classes. NaN when only one class is present."""
    from scipy.stats import rankdata

    y = np.asarray(y) == 1
    s = np.asarray(scores, dtype=np.float64)
    s = s[:, 1] if s.ndim == 2 else s
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
