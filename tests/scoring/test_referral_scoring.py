"""``meddiff score --referral``: every ok row carries the decision at the referral's threshold (and its alpha and
delta), meta.json records the referral, and a referral made for another model is refused before any scoring."""

from __future__ import annotations

import json

import numpy as np

from meddiff.bundle import read_bundle
from meddiff.cli import main
from meddiff.results import schema as S
from meddiff.results.store import read_meta, read_results


def _referral(path, model_id, threshold=0.5):
    path.write_text(json.dumps({"rule": "ltt", "alpha": 0.1, "delta": 0.05, "threshold": threshold,
                                "model_id": model_id}))
    return path


def test_score_with_referral_fills_the_decision(tiny_checkpoint, pneumonia_npz, tmp_path, capsys):
    model_id = read_bundle(tiny_checkpoint).metadata["model_id"]
    referral = _referral(tmp_path / "referral.json", model_id)
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

    _referral(referral, "another-model")
    capsys.readouterr()
    assert main(["score", "--checkpoint", str(tiny_checkpoint), "--data", str(pneumonia_npz),
                 "--out", str(tmp_path / "res2"), "--n-draws", "5", "--limit", "4", "--referral", str(referral)]) == 2
    err = capsys.readouterr().err
    assert "another-model" in err and model_id in err and "referral.json" in err
    assert not (tmp_path / "res2").exists()


def test_futility_stopping_refers_settled_images_early(tiny_checkpoint, pneumonia_npz, tmp_path, capsys):
    """``--stopping futility`` reads the referral's threshold: every image stops where the rule allows (its leader
    settled, or its shares settled inside the band the threshold refers), a futility stop is a referral, and the rule
    is refused without a referral."""
    import torch

    from meddiff.diffusion.stopping import mixture_stop, refer_settled, should_stop

    referral = _referral(tmp_path / "referral.json", read_bundle(tiny_checkpoint).metadata["model_id"])
    res = tmp_path / "res"
    assert main(["score", "--checkpoint", str(tiny_checkpoint), "--data", str(pneumonia_npz), "--out", str(res),
                 "--n-draws", "101", "--limit", "16", "--stopping", "futility", "--referral", str(referral)]) == 0
    ok = read_results(res)
    ok = ok[ok[S.STATUS] == S.STATUS_OK]
    assert len(ok) == 16
    votes = torch.tensor(np.stack(ok[S.VOTES].to_numpy()).astype(np.int64))
    drawn = torch.tensor(ok[S.N_DRAWS].to_numpy().astype(np.int64))
    assert (votes.sum(1) == drawn).all() and (drawn <= 101).all() and ((drawn % 8 == 0) | (drawn == 101)).all()
    # the rule allowed every stop
    assert should_stop(votes, drawn, 101, "futility", 0.01, 8, refer_above=0.5).all()
    by_futility = refer_settled(votes, drawn, 0.5, 0.005) & ~mixture_stop(votes, 0.005) & (drawn < 101)
    assert by_futility.any(), "no image was referred early: the test data no longer exercises the rule"
    assert set(ok[S.DECISION].to_numpy()[by_futility.numpy()]) == {"refer"}
    assert (ok[S.UNCERTAINTY].to_numpy()[by_futility.numpy()] > 0.5).all()

    capsys.readouterr()
    assert main(["score", "--checkpoint", str(tiny_checkpoint), "--data", str(pneumonia_npz),
                 "--out", str(tmp_path / "res2"), "--n-draws", "5", "--stopping", "futility"]) == 2
    assert "needs score.referral" in capsys.readouterr().err
