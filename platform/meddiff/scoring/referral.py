"""The referral decision applied while scoring (``score.referral``): in every ok row, decision "accept" when its
uncertainty is at or below the referral.json threshold (``meddiff calibrate``), else "refer", with the threshold,
alpha and delta it was certified for. Applied in ``scoring.shards.score_shard``, the path shared by in-process and
Ray Data scoring, so every method gets it. A referral calibrated on another model's results is refused."""

from __future__ import annotations

from typing import Any

from meddiff.results import schema as S
from meddiff.results.referral import Referral, check_model, read_referral


def load_referral(path: str, model_id: str | None) -> Referral | None:
    """The referral of ``score.referral`` ("" -> None); ResultsError when it was made for another model_id."""
    if not path:
        return None
    referral = read_referral(path)
    check_model(referral, model_id)
    return referral


def apply_referral(rows: list[dict[str, Any]], referral: Referral | None) -> list[dict[str, Any]]:
    """Fill decision, refer_threshold, risk_alpha and risk_delta of the ok rows (in place; returns ``rows``)."""
    if referral is None:
        return rows
    for row in rows:
        if row.get(S.STATUS) == S.STATUS_OK:
            row.update(referral.fields(row.get(S.UNCERTAINTY)))
    return rows
