"""Table 1 rows and the per-rule curves of a run (pure: frames in, frames out).

A diffusion run gives two rows, one per decision rule (its vote and its average-error prediction are both stored); a
baseline gives one. What each rule uses:
    rule      prediction     scores for ROC AUC              certainty ranking (coverage, AURC)     confidence (ECE)
    vote      pred_vote      vote shares (prob)              vote entropy, ties by error margin      top vote share
    average   pred_average   softmax of -mean error (scaled) 1 - relative error margin               (none)
    softmax   pred           softmax (prob)                  softmax entropy, ties by top prob       top softmax prob
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from meddiff import metrics as M
from meddiff.results import schema as S
from meddiff.method_registry import discover
from meddiff.results.runs import ResultsSet
from meddiff.results.summary import rule_scores, scoring_rules
from meddiff.rules import CLASSIFICATION_RULES

COVERAGES = (1.0, 0.8, 0.55)  # the points the paper's Fig. 3 is read at here


def method_label(method: str, rule: str) -> str:
    """Table 1's method column: the method's short name (its registry entry; the name itself for a method this
    process does not know), with the rule for classifiers that vote over draws."""
    known = discover().get(method)
    name = known.short if known is not None else method
    return f"{name} ({rule})" if rule in CLASSIFICATION_RULES else name


@dataclass(frozen=True)
class RuleView:
    rule: str
    pred: np.ndarray
    scores: np.ndarray  # [M, C]
    uncertainty: np.ndarray
    tiebreak: np.ndarray
    confidence: np.ndarray | None


def rule_views(run: ResultsSet) -> list[RuleView]:
    """The rules of a run: every scoring rule of ``meddiff.rules`` (vote, average) for a method that votes (meta.json's
    capabilities), else its softmax. A vote-count rule is ranked by the vote entropy (ties by the error margin) and
    its confidence is the top vote share; an error rule is ranked by its error margin and has no confidence."""
    df = run.frame
    prob = np.stack(df[S.PROB].to_numpy()).astype(np.float64)
    if not run.votes:
        return [RuleView("softmax", df[S.PRED].to_numpy().astype(int), prob, df[S.UNCERTAINTY].to_numpy(np.float64),
                         prob.max(axis=1), prob.max(axis=1))]
    mean_err = np.stack(df[S.MEAN_ERROR].to_numpy()).astype(np.float64)
    margin = M.error_margin(mean_err)
    views = []
    for rule in scoring_rules():
        pred = df[rule.column].to_numpy().astype(int)
        if rule.scores == S.PROB:
            views.append(RuleView(rule.name, pred, prob, df[S.UNCERTAINTY].to_numpy(np.float64), margin,
                                  prob.max(axis=1)))
        else:
            views.append(RuleView(rule.name, pred, rule_scores(rule, prob, mean_err), 1.0 - margin,
                                  np.zeros(len(df)), None))
    return views


def table1_rows(run: ResultsSet, info: dict[str, Any], n_boot: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """Table 1 rows of a run (``info``: its ``report.models.describe``): accuracy, F1 and ROC AUC with
    percentile-bootstrap 95 % CIs, sensitivity/specificity, accuracy at 100/80/55 % coverage, AURC, ECE, N, NFE per
    image and images/s."""
    y, c = run.y, run.num_classes
    rows = []
    for view in rule_views(run):
        correct = view.pred == y
        # the bootstrap resamples thousands of times: plain-numpy equivalents of F1 and AUC for two classes
        f1 = M.binary_f1 if c == 2 else (lambda a, b: M.f1(a, b, c))
        auc = M.binary_auc if c == 2 else M.roc_auc
        row: dict[str, Any] = {
            "run": run.name, "method": method_label(run.method, view.rule), "rule": view.rule, "backbone": info["backbone"],
            "params_m": info["params_m"], "dataset": info["dataset"], "images": len(y),
            "accuracy": M.accuracy(y, view.pred), "f1": M.f1(y, view.pred, c), "auc": M.roc_auc(y, view.scores),
        }
        for name, fn, args in (("accuracy", M.accuracy, (y, view.pred)), ("f1", f1, (y, view.pred)),
                               ("auc", auc, (y, view.scores))):
            row[f"{name}_lo"], row[f"{name}_hi"] = M.bootstrap_ci(fn, *args, n_boot=n_boot, seed=seed)
        if c == 2:
            row.update({k: v for k, v in M.sensitivity_specificity(y, view.pred).items() if k != "recall"})
        row.update(M.selective_table(correct, view.uncertainty, COVERAGES, view.tiebreak))
        row["aurc"] = M.aurc(correct, view.uncertainty, view.tiebreak)
        row["ece"] = (M.expected_calibration_error(correct, view.confidence) if view.confidence is not None
                      else float("nan"))
        row.update({"n_draws": info["n_draws"], "nfe_per_image": info["nfe_per_image"],
                    "images_per_s": info["images_per_s"], "images_per_s_source": info["images_per_s_source"],
                    "train_steps": info["train_steps"], "model_id": info["model_id"]})
        rows.append(row)
    return rows


def coverage_frame(run: ResultsSet) -> pd.DataFrame:
    """Accuracy-vs-coverage curves of every rule of a run (Fig. 3): run, rule, k, coverage, accuracy, threshold."""
    parts = []
    for view in rule_views(run):
        curve = M.coverage_curve(view.pred == run.y, view.uncertainty, view.tiebreak)
        parts.append(curve.assign(run=run.name, rule=view.rule, dataset=run.dataset))
    return pd.concat(parts, ignore_index=True)


def calibration_frame(run: ResultsSet, n_bins: int = 10) -> pd.DataFrame:
    parts = [M.calibration_bins(v.pred == run.y, v.confidence, n_bins).assign(run=run.name, rule=v.rule)
             for v in rule_views(run) if v.confidence is not None]
    return pd.concat(parts, ignore_index=True)


def confusion_frame(run: ResultsSet) -> pd.DataFrame:
    """Long confusion counts: run, rule, true, pred, count (class indices; names in ``true_name``/``pred_name``)."""
    names = run.class_names or tuple(str(i) for i in range(run.num_classes))
    rows = []
    for view in rule_views(run):
        cm = M.confusion_matrix(run.y, view.pred, run.num_classes)
        rows += [{"run": run.name, "rule": view.rule, "true": i, "pred": j, "true_name": names[i], "pred_name": names[j],
                  "count": int(cm[i, j])} for i in range(cm.shape[0]) for j in range(cm.shape[1])]
    return pd.DataFrame(rows)
