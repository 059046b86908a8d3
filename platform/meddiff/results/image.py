"""One scored image of a results set as frames: its row, its votes (or softmax) per class, its per-draw errors and
how the vote share settles as draws are added."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from meddiff.errors import ResultsError
from meddiff.results import schema as S

def image_row(df: pd.DataFrame, image_id: str) -> pd.Series:
    rows = df[df[S.IMAGE_ID] == image_id]
    if rows.empty:
        raise ResultsError(f"image {image_id!r} is not in this results set")
    return rows.iloc[0]


def votes_frame(row: pd.Series, class_names: Sequence[str]) -> pd.DataFrame:
    """Per class: votes, vote share (or softmax for a baseline) and mean error over draws."""
    names = _names(row, class_names)
    out = pd.DataFrame({"class": names})
    if row[S.VOTES] is not None:
        out["votes"] = [int(v) for v in row[S.VOTES]]
    if row[S.PROB] is not None:
        out["share" if row[S.VOTES] is not None else "softmax"] = list(row[S.PROB])
    if row[S.MEAN_ERROR] is not None:
        out["mean error"] = list(row[S.MEAN_ERROR])
    return out


def draws_frame(row: pd.Series, class_names: Sequence[str]) -> pd.DataFrame | None:
    """Per draw k and class: t, the error, whether that class won draw k (its vote). None when the run did not store
    per-draw errors (``score.store_draws: false``) or is a baseline."""
    errors, t = row[S.DRAW_ERRORS], row[S.DRAW_T]
    if errors is None or t is None:
        return None
    e = np.stack([np.asarray(x, dtype=np.float64) for x in errors])  # [C, N]
    names = _names(row, class_names)
    winner = e.argmin(axis=0)
    n = e.shape[1]
    return pd.DataFrame({
        "draw": np.tile(np.arange(1, n + 1), len(names)),
        "class": np.repeat(names, n),
        "t": np.tile(np.asarray(t, dtype=np.float64), len(names)),
        "error": e.reshape(-1),
        "vote": np.concatenate([winner == c for c in range(len(names))]),
    })


def vote_share_over_draws(draws: pd.DataFrame) -> pd.DataFrame:
    """Running vote share of every class after the first k draws (k = 1..N): how the vote settles as N grows."""
    wide = draws.pivot(index="draw", columns="class", values="vote").astype(float)
    share = wide.cumsum().div(np.arange(1, len(wide) + 1), axis=0)
    return share.reset_index().melt(id_vars="draw", var_name="class", value_name="share")


def _names(row: pd.Series, class_names: Sequence[str]) -> list[str]:
    width = len(row[S.PROB]) if row[S.PROB] is not None else len(class_names)
    names = list(class_names)[:width]
    return names + [f"class {i}" for i in range(len(names), width)]
