"""``meddiff score --referral``: every ok row carries the decision at the referral's threshold (and its alpha and
delta), meta.json records the referral, and a referral made for another model is refused before any scoring."""

from __future__ import annotations

import json

import numpy as np

from meddiff.bundle import read_bundle
from meddiff.cli import main
from meddiff.results import schema as S
from meddiff.results.store import read_meta, read_results


def test_score_with_referral_fills_the_decision(tiny_checkpoint, pneumonia_npz, tmp_path, capsys):
    model_id = read_bundle(tiny_checkpoint).metadata["model_id"]
    referral = tmp_path / "referral.json"
    referral.write_text(json.dumps({"rule": "ltt", "alpha": 0.1, "delta": 0.05, "threshold": 0.5,
                                    "model_id": model_id}))
    res = tmp_path / "res"
    assert main(["score", "--checkpoint", str(tiny_checkpoint), "--data", str(pneumonia_npz), "--out", str(res),
                 "--n-draws", "5", "--limit", "10", "--referral", str(referral)]) == 0
    df = read_results(res)
    ok = df[df[S.STATUS] == S.STATUS_OK]
    assert len(ok) == 10
    expect = np.where(ok[S.UNCERTAINTY].to_numpy() <= 0.5, "accept", "refer")
    assert list(ok[S.DECISION]) == list(expect)
    assert set(ok[S.DECISION]) <= {"accept", "refer"}
    assert np.allclose(ok[S.REFER_THRESHOLD], 0.5) and np.allclose(ok[S.RISK_ALPHA], 0.1)
    assert np.allclose(ok[S.RISK_DELTA], 0.05)
    assert read_meta(res)["referral"]["threshold"] == 0.5 and read_meta(res)["referral"]["model_id"] == model_id

    referral.write_text(json.dumps({"rule": "ltt", "alpha": 0.1, "delta": 0.05, "threshold": 0.5,
                                    "model_id": "another-model"}))
    capsys.readouterr()
    assert main(["score", "--checkpoint", str(tiny_checkpoint), "--data", str(pneumonia_npz),
                 "--out", str(tmp_path / "res2"), "--n-draws", "5", "--limit", "4", "--referral", str(referral)]) == 2
    err = capsys.readouterr().err
    assert "another-model" in err and model_id in err and "referral.json" in err
    assert not (tmp_path / "res2").exists()
