"""What a clinician acts on, compared between a fast scoring and the full-N vote: the decision at a referral threshold.

A decision is "refer" when the image's normalised vote entropy is above the threshold, else "accept" with the predicted
class (``meddiff.scoring.referral``: accept when the uncertainty is at or below the threshold). The benchmark fixes the
thresholds on the full-N vote, at the uncertainties that accept a given share of the images (coverage 80 % and 55 %),
and then asks of every faster variant:
  decision agreement   the share of images whose decision (refer, or accept with the same class) equals the full-N
                       vote's; a referred image's class is not acted on, so it does not count;
  accepted accuracy    the accuracy on the images the variant accepts (against the labels);
  coverage             the share of images it accepts.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

COVERAGES = (0.8, 0.55)
REFER = -1


def coverage_threshold(uncertainty: np.ndarray, coverage: float) -> float:
    """The uncertainty at or below which ``coverage`` of the images are accepted (the ceil(coverage n)-th smallest;
    ties at it are accepted too, so the achieved coverage may be a little higher)."""
    u = np.sort(np.asarray(uncertainty, dtype=np.float64))
    if not len(u):
        raise ValueError("coverage_threshold: no uncertainties")
    return float(u[max(0, math.ceil(coverage * len(u)) - 1)])


def decisions(pred: np.ndarray, uncertainty: np.ndarray, threshold: float) -> np.ndarray:
    """[n] predicted classes and uncertainties -> [n] the class where accepted, ``REFER`` (-1) where referred."""
    return np.where(np.asarray(uncertainty) <= threshold, np.asarray(pred), REFER)


def decision_stats(pred: np.ndarray, uncertainty: np.ndarray, full_pred: np.ndarray, full_uncertainty: np.ndarray,
                   labels: np.ndarray, thresholds: dict[float, float]) -> dict[str, Any]:
    """Per coverage (keys 80, 55): decision agreement with the full-N vote, accepted accuracy, achieved coverage,
    and how many images disagree (``decision_disagreements_80``)."""
    out: dict[str, Any] = {}
    for coverage, threshold in thresholds.items():
        key = round(coverage * 100)
        mine = decisions(pred, uncertainty, threshold)
        full = decisions(full_pred, full_uncertainty, threshold)
        accepted = mine != REFER
        out[f"decision_agreement_{key}"] = round(float((mine == full).mean()), 4)
        out[f"decision_disagreements_{key}"] = int((mine != full).sum())
        out[f"accepted_accuracy_{key}"] = (round(float((mine[accepted] == np.asarray(labels)[accepted]).mean()), 4)
                                           if accepted.any() else None)
        out[f"coverage_{key}"] = round(float(accepted.mean()), 4)
    return out


def nfe_quantiles(nfe: np.ndarray) -> dict[str, float]:
    """Median, p90 and p99 of the denoiser evaluations per image."""
    nfe = np.asarray(nfe, dtype=np.float64)
    return {"nfe_median": float(np.quantile(nfe, 0.5)), "nfe_p90": float(np.quantile(nfe, 0.9)),
            "nfe_p99": float(np.quantile(nfe, 0.99))}
