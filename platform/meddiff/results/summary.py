"""The headline numbers of a results frame (what ``meddiff score`` and the demo print, the dashboard's overview):
accuracy, F1, ROC AUC and the accuracy on the 50 % least uncertain images, per classification rule of
``meddiff.rules`` that scoring fills (a voting method), or for the single prediction (any other method)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from meddiff import metrics as M
from meddiff.results import schema as S
from meddiff.results.runs import ok_rows, scored
from meddiff.rules import CLASSIFICATION_RULES, ClassificationRule


def scoring_rules() -> list[ClassificationRule]:
    """The classification rules whose predictions a voting method's rows carry (a results column each)."""
    return [r for r in CLASSIFICATION_RULES.values() if r.scoring and r.column]


def rule_scores(rule: ClassificationRule, prob: np.ndarray, mean_error: np.ndarray) -> np.ndarray:
    """[M, C] per-class scores (higher = more likely) behind a rule's prediction, for ROC AUC: the vote shares of a
    vote-count rule, the negated mean errors of an error rule."""
    return prob if rule.scores == S.PROB else M.error_scores(mean_error)


def summarize_results(df: pd.DataFrame, num_classes: int | None = None, *, votes: bool) -> dict[str, Any]:
    """The headline numbers of a results frame (rows with status ok and a known label, ``results.runs.scored``).

    ``votes`` (the results set's method capabilities, ``meddiff.results.runs``): accuracy / F1 / ROC AUC for every
    scoring rule (vote, average), and each rule's accuracy on the 50 % least uncertain images. Otherwise the same
    for the single prediction.
    """
    total = len(df)
    ok = ok_rows(df)
    labelled = scored(df)
    out: dict[str, Any] = {"rows": total, "ok": len(ok), "errors": total - len(ok), "labelled": len(labelled)}
    if labelled.empty:
        return out
    y = labelled[S.LABEL].to_numpy()
    prob = np.stack(labelled[S.PROB].to_numpy())
    c = num_classes or prob.shape[1]
    unc = labelled[S.UNCERTAINTY].to_numpy()
    out["nfe_per_image"] = float(labelled[S.NFE].mean())
    if votes:
        mean_err = np.stack(labelled[S.MEAN_ERROR].to_numpy())
        margin = M.error_margin(mean_err)
        for rule in scoring_rules():
            pred = labelled[rule.column].to_numpy().astype(int)
            out[f"accuracy_{rule.name}"] = M.accuracy(y, pred)
            out[f"f1_{rule.name}"] = M.f1(y, pred, c)
            out[f"auc_{rule.name}"] = M.roc_auc(y, rule_scores(rule, prob, mean_err))
            out[f"accuracy_{rule.name}_at_50pct"] = M.accuracy_at_coverage(y == pred, unc, 0.5, margin)
    else:
        pred = labelled[S.PRED].to_numpy().astype(int)
        out["accuracy"] = M.accuracy(y, pred)
        out["f1"] = M.f1(y, pred, c)
        out["auc"] = M.roc_auc(y, prob)
        out["accuracy_at_50pct"] = M.accuracy_at_coverage(y == pred, unc, 0.5, prob.max(axis=1))
    return out


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable lines of ``summarize_results``."""
    lines = [f"images: {summary['rows']} ({summary['ok']} ok, {summary['errors']} failed, {summary['labelled']} labelled)"]
    for rule in scoring_rules():
        name = rule.name
        if f"accuracy_{name}" in summary:
            lines.append(
                f"{name:>8}: accuracy {summary[f'accuracy_{name}']:.3f}  F1 {summary[f'f1_{name}']:.3f}  "
                f"ROC AUC {summary[f'auc_{name}']:.3f}  accuracy on the 50% least uncertain "
                f"{summary[f'accuracy_{name}_at_50pct']:.3f}"
            )
    if "accuracy" in summary:
        lines.append(
            f"accuracy {summary['accuracy']:.3f}  F1 {summary['f1']:.3f}  ROC AUC {summary['auc']:.3f}  "
            f"accuracy on the 50% least uncertain {summary['accuracy_at_50pct']:.3f}"
        )
    if "nfe_per_image" in summary:
        what = "denoiser" if any(f"accuracy_{r.name}" in summary for r in scoring_rules()) else "network"
        lines.append(f"{what} evaluations per image: {summary['nfe_per_image']:.0f}")
    return "\n".join(lines)
