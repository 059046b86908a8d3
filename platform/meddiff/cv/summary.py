"""Cross-validation figures: per fold, their mean and standard deviation, and the pooled out-of-fold set with
percentile-bootstrap 95 % confidence intervals (``meddiff.metrics.bootstrap_ci``).

The prediction, scores and confidence of a results set are those of ``meddiff.report.table.rule_views`` (the
configured rule of a method that votes, else its softmax), so the figures agree with ``meddiff report``'s Table 1.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from meddiff import metrics as M
from meddiff.results import schema as S
from meddiff.results.runs import ResultsSet
from meddiff.report.table import RuleView, rule_views

# (key, title) of every figure, in table order
FIGURES = (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"), ("auc", "ROC AUC"),
           ("sensitivity", "sensitivity"), ("specificity", "specificity"), ("ece", "ECE"),
           ("nfe_per_image", "mean NFE"), ("n", "n"))
BOOTSTRAPPED = ("accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity")


def balanced_accuracy(y: np.ndarray, pred: np.ndarray, num_classes: int) -> float:
    """Mean over the classes present in ``y`` of their recall (binary: (sensitivity + specificity) / 2)."""
    cm = M.confusion_matrix(y, pred, num_classes)
    support = cm.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float((np.diag(cm)[present] / support[present]).mean())


def _view(run: ResultsSet) -> RuleView:
    """The view of the run's configured rule (``score.rule``), or its only one (softmax)."""
    views = rule_views(run)
    return next((v for v in views if v.rule == run.rule), views[0])


def _rates(y: np.ndarray, pred: np.ndarray, num_classes: int, positive: int) -> dict[str, float]:
    if num_classes != 2:
        return {"sensitivity": float("nan"), "specificity": float("nan")}
    r = M.sensitivity_specificity(y, pred, positive)
    return {"sensitivity": r["sensitivity"], "specificity": r["specificity"]}


def run_figures(run: ResultsSet, positive: int = 1) -> dict[str, Any]:
    """accuracy, balanced accuracy, ROC AUC, sensitivity and specificity (class ``positive`` as disease; NaN for more
    than two classes), ECE (NaN for a rule without a confidence), mean NFE per image and n (scored rows) of a run."""
    y, c = run.y, run.num_classes
    if len(y) == 0:
        return {key: float("nan") for key, _ in FIGURES[:-1]} | {"n": 0, "rule": None}
    view = _view(run)
    out: dict[str, Any] = {
        "rule": view.rule,
        "accuracy": M.accuracy(y, view.pred),
        "balanced_accuracy": balanced_accuracy(y, view.pred, c),
        "auc": M.roc_auc(y, view.scores),
        **_rates(y, view.pred, c, positive),
        "ece": (M.expected_calibration_error(view.pred == y, view.confidence) if view.confidence is not None
                else float("nan")),
        "nfe_per_image": float(run.frame[S.NFE].mean()),
        "n": int(len(y)),
    }
    return out


def pooled_intervals(run: ResultsSet, positive: int = 1, n_boot: int = 1000, seed: int = 0) -> dict[str, list[float]]:
    """Percentile-bootstrap 95 % CIs over the pooled images of the figures in ``BOOTSTRAPPED``: {key: [lo, hi]}."""
    y, c = run.y, run.num_classes
    view = _view(run)
    fns = {
        "accuracy": (M.accuracy, (y, view.pred)),
        "balanced_accuracy": (lambda a, b: balanced_accuracy(a, b, c), (y, view.pred)),
        "auc": (M.binary_auc if c == 2 else M.roc_auc, (y, view.scores)),
    }
    if c == 2:
        fns["sensitivity"] = (lambda a, b: _rates(a, b, 2, positive)["sensitivity"], (y, view.pred))
        fns["specificity"] = (lambda a, b: _rates(a, b, 2, positive)["specificity"], (y, view.pred))
    out = {key: list(M.bootstrap_ci(fn, *args, n_boot=n_boot, seed=seed)) for key, (fn, args) in fns.items()}
    return out


def mean_sd(per_fold: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation (ddof 1) across folds of every figure, NaN folds left out:
    {key: {"mean", "sd", "folds"}}."""
    out = {}
    for key, _ in FIGURES:
        values = np.array([f[key] for f in per_fold], dtype=np.float64)
        values = values[~np.isnan(values)]
        out[key] = {"mean": float(values.mean()) if len(values) else float("nan"),
                    "sd": float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
                    "folds": int(len(values))}
    return out


def _fmt(key: str, value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if key == "n":
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
    if key == "nfe_per_image":
        return f"{value:.1f}"
    return f"{value:.3f}"


def format_table(summary: dict[str, Any]) -> str:
    """The markdown table of ``cv_summary.json``: one row per fold, mean ± sd, and the pooled out-of-fold figures with
    their 95 % CIs."""
    head = "| fold | " + " | ".join(title for _, title in FIGURES) + " |"
    lines = [head, "|" + "---|" * (len(FIGURES) + 1)]
    for f in summary["folds"]:
        lines.append(f"| {f['fold']} | " + " | ".join(_fmt(k, f[k]) for k, _ in FIGURES) + " |")
    ms = summary["mean_sd"]
    lines.append("| mean ± sd | " + " | ".join(f"{_fmt(k, ms[k]['mean'])} ± {_fmt(k, ms[k]['sd'])}" if k != "n"
                                              else _fmt(k, ms[k]["mean"]) for k, _ in FIGURES) + " |")
    pooled, ci = summary["pooled"], summary["pooled_ci"]
    cells = []
    for k, _ in FIGURES:
        cell = _fmt(k, pooled[k])
        if k in ci and not any(math.isnan(v) for v in ci[k]):
            cell += f" [{_fmt(k, ci[k][0])}, {_fmt(k, ci[k][1])}]"
        cells.append(cell)
    lines.append("| pooled OOF (95 % CI) | " + " | ".join(cells) + " |")
    return "\n".join(lines)
