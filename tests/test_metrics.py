import numpy as np
import pandas as pd
import pytest

from meddiff import metrics as M
from meddiff.results.summary import format_summary, summarize_results
from meddiff.results import schema as S


def test_basic_metrics():
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0, 1, 1, 1, 0])
    assert M.accuracy(y, p) == pytest.approx(0.6)
    assert M.f1(y, p) == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))
    scores = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7], [0.65, 0.35]])
    assert M.roc_auc(y, scores) == pytest.approx(5 / 6)  # 5 of the 6 (positive, negative) pairs ranked right
    assert np.isnan(M.roc_auc(np.array([1, 1]), scores[:2]))


def test_coverage_curve_and_ties():
    correct = np.array([1, 0, 1, 1, 0, 1])
    unc = np.array([0.0, 0.9, 0.0, 0.2, 0.5, 0.0])
    tb = np.array([0.1, 0.0, 0.3, 0.0, 0.0, 0.2])  # among the three ties, index 2 is most certain, then 5, then 0
    assert M.certainty_order(unc, tb).tolist() == [2, 5, 0, 3, 4, 1]
    curve = M.coverage_curve(correct, unc, tb)
    assert curve["accuracy"].tolist() == pytest.approx([1, 1, 1, 1, 0.8, 4 / 6])
    assert curve["coverage"].iloc[-1] == 1.0
    assert M.accuracy_at_coverage(correct, unc, 0.5, tb) == 1.0
    assert M.accuracy_at_coverage(correct, unc, 1.0, tb) == pytest.approx(4 / 6)


def test_summarize_diffusion_results():
    rows = []
    for i, (y, votes, err) in enumerate([(0, [5, 0], [0.1, 0.3]), (1, [0, 5], [0.3, 0.2]), (1, [3, 2], [0.2, 0.21]),
                                         (0, [2, 3], [0.1, 0.5])]):
        pv = int(np.argmax(votes))
        rows.append({S.IMAGE_ID: str(i), S.LABEL: y, S.STATUS: "ok", S.PRED: pv, S.PRED_VOTE: pv,
                     S.PRED_AVERAGE: int(np.argmin(err)), S.PROB: list(np.array(votes) / 5), S.MEAN_ERROR: err,
                     S.UNCERTAINTY: 0.0 if 0 in votes else 0.9, S.NFE: 10})
    rows.append({S.IMAGE_ID: "bad", S.LABEL: 0, S.STATUS: "error"})
    out = summarize_results(pd.DataFrame(rows).reindex(columns=S.COLUMNS), votes=True)
    assert out["rows"] == 5 and out["errors"] == 1 and out["labelled"] == 4
    assert out["accuracy_vote"] == pytest.approx(0.5)  # images 0 and 1 right
    assert out["accuracy_average"] == pytest.approx(0.75)  # 0, 1 and 3 right
    assert out["accuracy_vote_at_50pct"] == pytest.approx(1.0)
    assert "vote: accuracy 0.500" in format_summary(out)
