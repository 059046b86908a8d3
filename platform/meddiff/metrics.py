"""Pure metric functions over labels, predictions, scores and uncertainties (numpy in, numbers or frames out).

scikit-learn computes what it already has (F1, ROC AUC); the coverage functions are the paper's accuracy-vs-uncertainty
analysis: sort images from most to least certain, keep the most certain fraction, measure accuracy on it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score, roc_auc_score

from meddiff.scoring import schema as S


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


def summarize_results(df: pd.DataFrame, num_classes: int | None = None) -> dict[str, Any]:
    """The headline numbers of a results frame (rows with status ok and a known label).

    Diffusion results: accuracy / F1 / ROC AUC for the vote and the average rule, and the vote's accuracy on the 50 %
    least uncertain images. Baselines: the same for their single prediction.
    """
    total = len(df)
    ok = df[(df[S.STATUS] == S.STATUS_OK)]
    labelled = ok[ok[S.LABEL] >= 0]
    out: dict[str, Any] = {"rows": total, "ok": len(ok), "errors": total - len(ok), "labelled": len(labelled)}
    if labelled.empty:
        return out
    y = labelled[S.LABEL].to_numpy()
    prob = np.stack(labelled[S.PROB].to_numpy())
    c = num_classes or prob.shape[1]
    unc = labelled[S.UNCERTAINTY].to_numpy()
    out["nfe_per_image"] = float(labelled[S.NFE].mean())
    if labelled[S.PRED_VOTE].notna().all():
        mean_err = np.stack(labelled[S.MEAN_ERROR].to_numpy())
        margin = error_margin(mean_err)
        for rule, col, scores in (("vote", S.PRED_VOTE, prob), ("average", S.PRED_AVERAGE, error_scores(mean_err))):
            pred = labelled[col].to_numpy().astype(int)
            out[f"accuracy_{rule}"] = accuracy(y, pred)
            out[f"f1_{rule}"] = f1(y, pred, c)
            out[f"auc_{rule}"] = roc_auc(y, scores)
            out[f"accuracy_{rule}_at_50pct"] = accuracy_at_coverage(y == pred, unc, 0.5, margin)
    else:
        pred = labelled[S.PRED].to_numpy().astype(int)
        out["accuracy"] = accuracy(y, pred)
        out["f1"] = f1(y, pred, c)
        out["auc"] = roc_auc(y, prob)
        out["accuracy_at_50pct"] = accuracy_at_coverage(y == pred, unc, 0.5, prob.max(axis=1))
    return out


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable lines of ``summarize_results``."""
    lines = [f"images: {summary['rows']} ({summary['ok']} ok, {summary['errors']} failed, {summary['labelled']} labelled)"]
    for rule in ("vote", "average"):
        if f"accuracy_{rule}" in summary:
            lines.append(
                f"{rule:>8}: accuracy {summary[f'accuracy_{rule}']:.3f}  F1 {summary[f'f1_{rule}']:.3f}  "
                f"ROC AUC {summary[f'auc_{rule}']:.3f}  accuracy on the 50% least uncertain "
                f"{summary[f'accuracy_{rule}_at_50pct']:.3f}"
            )
    if "accuracy" in summary:
        lines.append(
            f"accuracy {summary['accuracy']:.3f}  F1 {summary['f1']:.3f}  ROC AUC {summary['auc']:.3f}  "
            f"accuracy on the 50% least uncertain {summary['accuracy_at_50pct']:.3f}"
        )
    if "nfe_per_image" in summary:
        lines.append(f"denoiser evaluations per image: {summary['nfe_per_image']:.0f}")
    return "\n".join(lines)
