"""Uncertainty curves of a results set's scored rows (``results.runs.scored``): accuracy against coverage, the
uncertainty threshold a reader picks, and thinning long curves for plotting."""

from __future__ import annotations

import numpy as np
import pandas as pd

from meddiff import metrics as M
from meddiff.results import schema as S
from meddiff.results.runs import scored

def correctness(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(correct, uncertainty, tiebreak) of the scored rows: the same ordering ``results.summary.summarize_results`` uses
    (diffusion: ties broken by the error margin; baselines: by the top softmax probability)."""
    ok = scored(df)
    correct = (ok[S.PRED].to_numpy() == ok[S.LABEL].to_numpy())
    unc = ok[S.UNCERTAINTY].to_numpy(dtype=np.float64)
    if len(ok) and ok[S.MEAN_ERROR].notna().all():
        tiebreak = M.error_margin(np.stack(ok[S.MEAN_ERROR].to_numpy()))
    elif len(ok):
        tiebreak = np.stack(ok[S.PROB].to_numpy()).max(axis=1)
    else:
        tiebreak = np.zeros(0)
    return correct, unc, tiebreak


def coverage_curve(df: pd.DataFrame) -> pd.DataFrame:
    """Accuracy of the k most certain images, k = 1..N (``metrics.coverage_curve``)."""
    correct, unc, tiebreak = correctness(df)
    return M.coverage_curve(correct, unc, tiebreak)


def threshold_curve(df: pd.DataFrame) -> pd.DataFrame:
    """Keep the images whose uncertainty is <= a threshold: one row per distinct threshold with the coverage and the
    accuracy of what is kept (columns threshold, kept, coverage, accuracy)."""
    correct, unc, _ = correctness(df)
    if len(unc) == 0:
        return pd.DataFrame(columns=["threshold", "kept", "coverage", "accuracy"])
    order = np.argsort(unc, kind="stable")
    u, c = unc[order], correct[order].astype(np.float64)
    last = np.r_[np.nonzero(np.diff(u))[0], len(u) - 1]  # last index of every distinct uncertainty value
    kept = last + 1
    return pd.DataFrame({"threshold": u[last], "kept": kept, "coverage": kept / len(u),
                         "accuracy": np.cumsum(c)[last] / kept})


def at_threshold(df: pd.DataFrame, threshold: float) -> dict[str, float]:
    """What the threshold slider shows: images kept (uncertainty <= threshold), coverage, accuracy on them, and the
    accuracy of all images for comparison."""
    correct, unc, _ = correctness(df)
    keep = unc <= threshold + 1e-9
    n = len(unc)
    return {"threshold": float(threshold), "kept": int(keep.sum()), "images": n,
            "coverage": float(keep.mean()) if n else float("nan"),
            "accuracy": float(correct[keep].mean()) if keep.any() else float("nan"),
            "accuracy (all)": float(correct.mean()) if n else float("nan")}


def thin(curve: pd.DataFrame, max_points: int = 400) -> pd.DataFrame:
    """At most ``max_points`` evenly spaced rows (always the first and last) so long curves plot quickly."""
    if len(curve) <= max_points:
        return curve
    idx = np.unique(np.linspace(0, len(curve) - 1, max_points).round().astype(int))
    return curve.iloc[idx]
