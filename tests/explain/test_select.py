"""Image selection over a results frame."""

import numpy as np
import pandas as pd
import pytest

from meddiff.errors import ConfigError
from meddiff.explain.select import parse_selection, select_images
from meddiff.results import schema as S


def results() -> pd.DataFrame:
    unc = [0.0, 0.9, 0.0, 0.5, 1.0, 0.2]
    err = [[0.1, 0.5], [0.3, 0.31], [0.1, 0.2], [0.2, 0.3], [0.3, 0.3], [0.5, 0.1]]
    rows = [{S.IMAGE_ID: f"im{i}", S.LABEL: i % 2, S.PRED: int(np.argmin(e)), S.UNCERTAINTY: u, S.MEAN_ERROR: e,
             S.PROB: [0.5, 0.5], S.STATUS: "ok"} for i, (u, e) in enumerate(zip(unc, err))]
    rows.append({S.IMAGE_ID: "broken", S.LABEL: 0, S.STATUS: "error", S.UNCERTAINTY: 1.0})
    return pd.DataFrame(rows).reindex(columns=S.COLUMNS)


def test_parse():
    assert str(parse_selection("uncertain:3")) == "uncertain:3"
    assert parse_selection("errors").k is None and parse_selection("errors:2").k == 2
    assert parse_selection("ids:a, b").ids == ("a", "b")
    for bad in ("worst:3", "uncertain", "uncertain:0", "certain:x", "ids:", "all:3"):
        with pytest.raises(ConfigError):
            parse_selection(bad)


def test_select_kinds():
    df = results()
    # im0 (margin 0.4/0.6) beats im2 (0.1/0.3) among the two uncertainty-0 images
    assert select_images(df, "certain:2")["image_id"].tolist() == ["im0", "im2"]
    assert select_images(df, "uncertain:2")["image_id"].tolist() == ["im4", "im1"]
    ext = select_images(df, "extremes:1")
    assert ext["image_id"].tolist() == ["im0", "im4"] and ext["reason"].tolist() == ["certain", "uncertain"]
    # errors: label != pred -> im1 (label 1, pred 0), im3 (1 vs 0), im4 (0 vs 0? no), im5 (label 1, pred 1 no)
    errs = select_images(df, "errors")
    assert set(errs["image_id"]) == {"im1", "im3"} and errs["reason"].eq("error").all()
    assert errs["image_id"].tolist() == ["im3", "im1"]  # most certain mistake first
    assert select_images(df, "ids:im5,im0")["image_id"].tolist() == ["im5", "im0"]
    assert len(select_images(df, "all")) == 6  # the failed row is never selected
    assert len(select_images(df, "extremes:10")) == 6  # no duplicates
    with pytest.raises(ConfigError, match="not scored"):
        select_images(df, "ids:broken")
