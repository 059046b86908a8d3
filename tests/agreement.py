"""Comparing two scorings of the same images with the same noise that ran through different batch shapes, thread
counts or processes (in-process vs Ray actors, one actor vs two, batch scoring vs the endpoint).

Their float32 errors then differ in the last bits: measured on the tiny test model, the reference loop and the
class-batched engine at micro-batches of 8, 64 and 256, with 1 or 2 threads, differ by at most 3.2e-7 relative. A draw
whose two best classes are closer than that may vote either way, and such draws exist (about 1 in 10,000 of the tiny
model's draws has a relative gap below 1e-5). ``meddiff.bench.replay.NEAR_TIE`` (1e-4) is the threshold used here.
Everything else must agree exactly: the votes of every other draw, and a prediction whose margin those near-tied draws
cannot overturn.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from meddiff.bench.replay import NEAR_TIE, near_tied_draws
from meddiff.results import schema as S

RTOL = 1e-4  # errors of the same draw computed two ways


def near_tied(draw_errors: Sequence[Sequence[float]]) -> int:
    """How many draws of one image ([C][N] errors) have their two best classes within ``NEAR_TIE`` (relative)."""
    return int(near_tied_draws(torch.tensor([list(c) for c in draw_errors], dtype=torch.float64)))


def _margin(values: np.ndarray) -> float:
    top = np.sort(values)[::-1]
    return float(top[0] - top[1])


def assert_same_image(a: pd.Series | dict, b: pd.Series | dict, draw_errors=None) -> None:
    """``a`` and ``b``: one image's results rows (schema columns; ``b`` may be an endpoint answer mapped to them).
    ``draw_errors``: the per-draw errors to find near ties in (default: ``a``'s)."""
    ties = near_tied(a[S.DRAW_ERRORS] if draw_errors is None else draw_errors)
    va, vb = np.asarray(list(a[S.VOTES])), np.asarray(list(b[S.VOTES]))
    assert va.sum() == vb.sum(), (va, vb)
    # every draw that is not near-tied votes the same way
    assert np.abs(va - vb).sum() // 2 <= ties, (a[S.IMAGE_ID], va, vb, ties)
    if _margin(va) > 2 * ties:  # the near-tied draws cannot change the vote's winner
        assert a[S.PRED_VOTE] == b[S.PRED_VOTE], (a[S.IMAGE_ID], va, vb)
    if (va == vb).all():
        assert abs(float(a[S.UNCERTAINTY]) - float(b[S.UNCERTAINTY])) < 1e-6, a[S.IMAGE_ID]
    ma, mb = np.asarray(list(a[S.MEAN_ERROR])), np.asarray(list(b[S.MEAN_ERROR]))
    np.testing.assert_allclose(mb, ma, rtol=RTOL, err_msg=str(a[S.IMAGE_ID]))
    if _margin(-ma) > NEAR_TIE * np.abs(ma).max():
        assert a[S.PRED_AVERAGE] == b[S.PRED_AVERAGE], (a[S.IMAGE_ID], ma, mb)


def assert_same_scores(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Two results frames of the same images (any row order): same ids once each, and per image the agreement above,
    with the per-draw errors equal to ``RTOL``."""
    a = a.sort_values(S.IMAGE_ID).reset_index(drop=True)
    b = b.sort_values(S.IMAGE_ID).reset_index(drop=True)
    assert b[S.IMAGE_ID].is_unique and a[S.IMAGE_ID].tolist() == b[S.IMAGE_ID].tolist()
    for (_, ra), (_, rb) in zip(a.iterrows(), b.iterrows()):
        ea = np.asarray([list(c) for c in ra[S.DRAW_ERRORS]])
        eb = np.asarray([list(c) for c in rb[S.DRAW_ERRORS]])
        np.testing.assert_allclose(eb, ea, rtol=RTOL, atol=1e-7, err_msg=str(ra[S.IMAGE_ID]))
        assert_same_image(ra, rb)
