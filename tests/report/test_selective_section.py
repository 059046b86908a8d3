"""The report's referral section (meddiff.report.selective): calibration on the val rows, tested on the others;
a referral recorded in meta.json applied to every row; else a stated group-aware 50/50 split."""

from __future__ import annotations

import numpy as np
import pandas as pd

from meddiff.report.selective import selective_section
from meddiff.results.referral import ltt_threshold, selective_figures
from meddiff.results.runs import load
from meddiff.results.selective import rows_of
from tests.results.selective_rows import write_vote_results


def test_section_calibrates_on_val_and_measures_on_test(tmp_path):
    run = load(write_vote_results(tmp_path / "res", n=600))
    out = tmp_path / "report"
    out.mkdir()
    section = selective_section([run], out, alpha=0.1, delta=0.1)
    assert set(section) == {"title", "markdown", "figures", "tables"}
    table = section["tables"]["selective"]
    assert list(table["rule"]) == ["ltt", "ltt-multistart", "naive"]
    rows = rows_of(run.frame)
    val, test = rows.splits == "val", rows.splits == "test"
    t = ltt_threshold(rows.uncertainty[val], rows.correct[val], 0.1, 0.1)
    ltt = table.iloc[0]
    assert ltt["threshold"] == t.threshold and ltt["n_calibration"] == 300 and ltt["n_test"] == 300
    expect = selective_figures(rows.uncertainty[test], rows.correct[test], t.threshold)
    assert ltt["test_coverage"] == expect["coverage"] and ltt["test_risk"] == expect["risk"]
    assert "val rows" in ltt["calibration"]
    assert 0.8 < ltt["conformal_coverage"] <= 1.0 and ltt["conformal_set_size"] > 0
    assert np.isfinite([ltt["ece_raw"], ltt["ece_temperature"], ltt["ece_isotonic"]]).all()
    assert pd.read_parquet(out / "selective.parquet").shape[0] == 3 and (out / "risk_coverage.png").stat().st_size
    assert "| ltt |" in section["markdown"] and "risk_coverage.png" in section["markdown"]


def test_section_uses_the_recorded_referral_or_a_stated_split(tmp_path):
    ref = {"path": "referral.json", "rule": "ltt", "alpha": 0.05, "delta": 0.1, "threshold": 0.2, "model_id": "m-sel"}
    run = load(write_vote_results(tmp_path / "a", n=200, splits=("test",), meta={"referral": ref}))
    (tmp_path / "ra").mkdir()
    table = selective_section([run], tmp_path / "ra")["tables"]["selective"]
    assert len(table) == 1 and table.iloc[0]["n_test"] == 200 and table.iloc[0]["threshold"] == 0.2
    assert table.iloc[0]["alpha"] == 0.05 and "referral of meta.json" in table.iloc[0]["calibration"]
    run = load(write_vote_results(tmp_path / "b", n=200, splits=("test",)))
    (tmp_path / "rb").mkdir()
    table = selective_section([run], tmp_path / "rb")["tables"]["selective"]
    assert "group-aware 50/50" in table.iloc[0]["calibration"]
    assert table.iloc[0]["n_calibration"] + table.iloc[0]["n_test"] == 200


def test_a_val_results_set_of_the_same_model_calibrates_the_test_set(tmp_path):
    val = load(write_vote_results(tmp_path / "val", n=300, seed=1, splits=("val",),
                                  meta={"score_config": {"split": "val"}}))
    test = load(write_vote_results(tmp_path / "test", n=200, seed=2, splits=("test",),
                                   meta={"score_config": {"split": "test"}}))
    (tmp_path / "r").mkdir()
    table = selective_section([val, test], tmp_path / "r")["tables"]["selective"]
    row = table[(table["run"] == test.name) & (table["rule"] == "ltt")].iloc[0]
    v, t = rows_of(val.frame), rows_of(test.frame)
    chosen = ltt_threshold(v.uncertainty, v.correct, 0.1, 0.1)
    assert row["n_calibration"] == 300 and row["n_test"] == 200 and f"val results set {val.name}" in row["calibration"]
    assert row["threshold"] == chosen.threshold
    assert row["test_coverage"] == selective_figures(t.uncertainty, t.correct, chosen.threshold)["coverage"]
    assert "group-aware" in table[table["run"] == val.name].iloc[0]["calibration"]  # the val set itself: 50/50


def test_a_test_risk_far_above_alpha_is_flagged(tmp_path):
    # calibration images are easy (few errors), the test images hard: the certified threshold fails on them
    val = load(write_vote_results(tmp_path / "val", n=400, seed=1, splits=("val",), a=6.0, b=0.3,
                                  meta={"score_config": {"split": "val"}}))
    test = load(write_vote_results(tmp_path / "test", n=400, seed=2, splits=("test",), a=1.5, b=0.8,
                                   meta={"score_config": {"split": "test"}}))
    (tmp_path / "r").mkdir()
    section = selective_section([val, test], tmp_path / "r", alpha=0.1, delta=0.1)
    row = section["tables"]["selective"].query("run == @test.name and rule == 'ltt'").iloc[0]
    assert row["test_risk"] > 0.15 and row["test_exceeds_alpha_p"] < 0.01
    assert f"**Warning ({test.name}, ltt)**" in section["markdown"] and "exchangeable" in section["markdown"]
    assert f"**Warning ({val.name}" not in section["markdown"]
