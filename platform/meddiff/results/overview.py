"""The runs overview (the dashboard's Table 1 comparison): one row per results set, from ``results.summary.summarize_results``
of its rows and what its meta.json says about it (``results.runs.ResultsSet``)."""

from __future__ import annotations

from typing import Any, Iterable

import pandas as pd

from meddiff.results.summary import summarize_results
from meddiff.results.runs import ResultsSet

OVERVIEW_COLUMNS = ["run", "dataset", "method", "backbone", "N", "images", "failed", "accuracy", "F1", "ROC AUC",
                    "acc. average rule", "F1 average rule", "acc. @50% coverage", "NFE / image", "model_id"]


def overview_row(run: ResultsSet, df: pd.DataFrame) -> dict[str, Any]:
    """One line of the Table 1 comparison of ``run`` and its rows ``df``: a method that votes (meta.json's
    capabilities) reports the majority vote (the paper's rule) in the main columns and the average-error rule beside
    it; the others their single prediction."""
    vote = run.votes
    s = summarize_results(df, len(run.class_names) or None, votes=vote)
    get = lambda key: s.get(key, float("nan"))
    return {
        "run": run.name, "dataset": run.dataset, "method": run.method, "backbone": run.backbone,
        "N": run.n_draws, "images": s["labelled"], "failed": s["errors"],
        "accuracy": get("accuracy_vote" if vote else "accuracy"), "F1": get("f1_vote" if vote else "f1"),
        "ROC AUC": get("auc_vote" if vote else "auc"),
        "acc. average rule": get("accuracy_average"), "F1 average rule": get("f1_average"),
        "acc. @50% coverage": get("accuracy_vote_at_50pct" if vote else "accuracy_at_50pct"),
        "NFE / image": s.get("nfe_per_image", float("nan")), "model_id": run.model_id,
    }


def overview_table(runs: Iterable[tuple[ResultsSet, pd.DataFrame]]) -> pd.DataFrame:
    return pd.DataFrame([overview_row(run, df) for run, df in runs], columns=OVERVIEW_COLUMNS)
