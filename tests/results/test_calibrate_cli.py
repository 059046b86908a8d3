"""``meddiff calibrate``: referral.json from a results set's val rows, and the re-split check table."""

from __future__ import annotations

import json

from meddiff.cli import main
from meddiff.results.referral import ltt_threshold, read_referral
from meddiff.results.runs import load
from meddiff.results.selective import rows_of

from .selective_rows import write_vote_results


def test_calibrate_writes_referral_json(tmp_path, capsys):
    results = write_vote_results(tmp_path / "res")
    out = tmp_path / "referral.json"
    assert main(["calibrate", str(results), "--alpha", "0.1", "--delta", "0.1", "--split", "val",
                 "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    rows = rows_of(load(results).frame)
    val = rows.splits == "val"
    expect = ltt_threshold(rows.uncertainty[val], rows.correct[val], 0.1, 0.1)
    assert record["threshold"] == expect.threshold and record["calibration"]["n"] == int(val.sum()) == 200
    assert record["model_id"] == "m-sel" and record["split"] == "val" and record["rule"] == "ltt"
    assert record["temperature"] > 0 and record["conformal"]["qhat"] is not None and record["code_version"]
    assert record["calibration"]["ucb"] <= 0.1
    assert read_referral(out).threshold == expect.threshold
    assert "referral:" in capsys.readouterr().out


def test_calibrate_check_prints_and_writes_the_table(tmp_path, capsys):
    results = write_vote_results(tmp_path / "res")
    table = tmp_path / "check.json"
    assert main(["calibrate", str(results), "--check", "200", "--json", str(table)]) == 0
    text = capsys.readouterr().out
    assert "| 0.05 | ltt |" in text and "| 0.10 | naive |" in text and "conformal-lac" in text
    rows = json.loads(table.read_text())
    assert {(r["alpha"], r["rule"]) for r in rows} == {(a, r) for a in (0.05, 0.1)
                                                       for r in ("ltt", "ltt-multistart", "naive", "conformal-lac")}
    assert all(r["repeats"] == 200 for r in rows)
