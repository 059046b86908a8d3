"""The report on results folders this test writes: replays agree with the engine, the report files exist."""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from meddiff.diffusion.engine import summarize
from meddiff.report import ablation as A
from meddiff.report.build import build_report
from meddiff.report.models import draw_logsnr
from meddiff.results import schema as S
from meddiff.results.runs import load
from meddiff.scoring.local import finish_meta

CLASSES = ["normal", "pneumonia"]
CKPT = {"kind": "diffusion", "model": {"name": "unet", "params": {"block_out_channels": [16, 32],
                                                                  "attention": [False, True]}},
        "diffusion": {"wavelet": True, "shift_base": 64}, "class_names": CLASSES, "image_size": 32, "channels": 1,
        "step": 300, "model_id": "unet-test"}


def synthetic_errors(m: int, n: int, seed: int = 0):
    """Per-draw eps errors [M, 2, N] where the true class is favoured at mid t and noise dominates elsewhere."""
    rng = np.random.default_rng(seed)
    y = np.arange(m) % 2
    t = rng.random((m, n))
    base = 0.2 + rng.gamma(2.0, 0.2, (m, 1, n))
    signal = 0.15 * np.exp(-((t - 0.4) / 0.2) ** 2)[:, None, :]
    err = base * (1 + rng.normal(0, 0.08, (m, 2, n)))
    err[np.arange(m), y] -= signal[:, 0] * base[:, 0]
    return y, t, err.astype(np.float32)


def write_diffusion_results(folder, m=40, n=9):
    y, t, err = synthetic_errors(m, n)
    res = summarize(torch.from_numpy(err))
    share = (res.votes.float() / n).numpy()
    rows = [{S.IMAGE_ID: f"img{i:03d}", S.LABEL: int(y[i]), S.LABEL_NAME: CLASSES[y[i]], S.SPLIT: "test",
             S.PRED: int(res.pred_vote[i]), S.PRED_VOTE: int(res.pred_vote[i]), S.PRED_AVERAGE: int(res.pred_average[i]),
             S.VOTES: res.votes[i].tolist(), S.PROB: share[i].tolist(), S.MEAN_ERROR: res.mean_error[i].tolist(),
             S.UNCERTAINTY: float(res.uncertainty[i]), S.N_DRAWS: n, S.NFE: 2 * n, S.DRAW_ERRORS: err[i].tolist(),
             S.DRAW_T: t[i].tolist(), S.METHOD: "diffusion", S.RULE: "vote", S.MODEL_ID: "unet-test", S.SEED: 0,
             S.STATUS: "ok"} for i in range(m)]
    rows.append({S.IMAGE_ID: "broken", S.LABEL: 0, S.STATUS: "error", S.ERROR: "cannot decode"})
    folder.mkdir(parents=True)
    pq.write_table(S.to_table(rows[:20]), folder / "shard-000000.parquet")
    pq.write_table(S.to_table(rows[20:]), folder / "shard-000001.parquet")
    (folder / "meta.json").write_text(json.dumps({
        "method": "diffusion", "model_id": "unet-test", "class_names": CLASSES, "checkpoint_metadata": CKPT,
        "score_config": {"n_draws": n, "error_target": "eps", "t_min": 0.0, "t_max": 1.0},
        "data": {"name": "synthetic"}, "created": "2026-01-01T00:00:00+0000"}))
    return y, t, err, res


def write_baseline_results(folder, m=40):
    rng = np.random.default_rng(1)
    y = np.arange(m) % 2
    p1 = np.clip(0.5 + (y - 0.5) * 0.6 + rng.normal(0, 0.25, m), 0.01, 0.99)
    rows = [{S.IMAGE_ID: f"img{i:03d}", S.LABEL: int(y[i]), S.PRED: int(p1[i] > 0.5), S.PROB: [1 - p1[i], p1[i]],
             S.UNCERTAINTY: float(-(p1[i] * np.log2(p1[i]) + (1 - p1[i]) * np.log2(1 - p1[i]))), S.NFE: 1,
             S.METHOD: "baseline", S.STATUS: "ok"} for i in range(m)]
    folder.mkdir(parents=True)
    pq.write_table(S.to_table(rows), folder / "shard-000000.parquet")
    ck = {**CKPT, "kind": "baseline", "model": {"name": "resnet18", "params": {}}}
    (folder / "meta.json").write_text(json.dumps({"method": "baseline", "class_names": CLASSES, "model_id": "rn",
                                                  "checkpoint_metadata": ck, "data": {"name": "synthetic"}}))


def test_replays_agree_with_the_engine_and_targets_only_change_averages(tmp_path):
    y, t, err, res = write_diffusion_results(tmp_path / "dm")
    run = load(tmp_path / "dm")
    assert len(run.frame) == 40 and run.total_rows == 41 and run.has_draws
    e = run.draw_errors()
    assert e.shape == (40, 2, 9)
    full = A.weighted_rules(e)
    assert full.vote.tolist() == res.pred_vote.tolist() and full.average.tolist() == res.pred_average.tolist()
    lam = draw_logsnr(run)
    x = A.retarget(e, lam, "x")
    assert np.allclose(x, e * np.exp(-lam)[:, None, :])
    assert np.allclose(A.to_eps_errors(x, lam, "x"), e) and np.allclose(A.to_eps_errors(A.retarget(e, lam, "v"), lam, "v"), e)
    assert A.weighted_rules(x).vote.tolist() == full.vote.tolist()  # votes do not depend on the target
    # zero weights drop draws: weights on the first 3 draws == the rules on those draws
    w = np.zeros((40, 9))
    w[:, :3] = 1
    assert A.weighted_rules(e, w).vote.tolist() == A.weighted_rules(e[:, :, :3]).vote.tolist()
    assert (A.weighted_rules(e, np.zeros((40, 9))).vote == -1).all()
    assert np.allclose(A.logsnr_density_weights(lam, 1.0, 1.0), 1.0)
    nab = A.n_ablation(e, y, [1, 5, 9], repeats=4)
    assert len(nab) == (4 + 4 + 1) * 2
    assert nab[(nab["n"] == 9) & (nab["rule"] == "vote")]["accuracy"].item() == pytest.approx((full.vote == y).mean())
    buckets = A.t_bucket_accuracy(e, t, y, [0, 0.5, 1.0])
    assert buckets["draws"].sum() == 40 * 9
    assert A.mcnemar(np.array([1, 1, 0, 1]), np.array([0, 1, 0, 0])) == {"only_first": 2, "only_second": 0,
                                                                          "p_value": pytest.approx(0.5)}


def test_report_on_written_results(tmp_path):
    write_diffusion_results(tmp_path / "dm")
    write_baseline_results(tmp_path / "rn")
    finish_meta(tmp_path / "rn", images=40, seconds=2.0, device="cpu", threads=2)  # what a scoring job records
    notes = tmp_path / "notes.md"
    notes.write_text("## Finding\nThe vote wins here.")
    out = build_report([str(tmp_path / "dm"), f"resnet={tmp_path / 'rn'}"], tmp_path / "report", notes=notes,
                       n_boot=50, repeats=3, log=None)
    t1 = pd.read_parquet(out["tables"]["table1"])
    assert t1["method"].tolist() == ["DM (vote)", "DM (average)", "baseline"]
    assert t1["run"].tolist() == ["dm", "dm", "resnet"]
    for col in ("accuracy", "f1", "auc"):
        assert (t1[f"{col}_lo"] <= t1[col] + 1e-12).all() and (t1[col] <= t1[f"{col}_hi"] + 1e-12).all()
    assert t1.loc[2, "images_per_s"] == 20.0 and t1.loc[2, "images_per_s_source"] == "recorded"
    assert t1.loc[0, "nfe_per_image"] == 18 and t1.loc[0, "n_draws"] == 9 and np.isnan(t1.loc[1, "ece"])
    cov = pd.read_parquet(out["tables"]["coverage"])
    for _, g in cov.groupby(["run", "rule"]):
        assert np.all(np.diff(g["coverage"]) > 0) and g["coverage"].iloc[-1] == 1.0
    vva = pd.read_parquet(out["tables"]["vote_vs_average"])
    assert vva["run"].tolist() == ["dm"] and {"vote", "average", "average_x", "mcnemar_p"} <= set(vva.columns)
    for name in ("coverage", "reliability", "confusion", "n_ablation", "t_ablation", "vote_vs_average"):
        assert (tmp_path / "report" / f"{name}.png").stat().st_size > 1000
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Table 1" in text and "DM (vote)" in text and "baseline" in text and "The vote wins here." in text
    assert "![N ablation](n_ablation.png)" in text and "acc@55" in text


def test_cli_report_and_bad_input(tmp_path, capsys):
    from meddiff.cli import main

    write_baseline_results(tmp_path / "rn")
    assert main(["report", str(tmp_path / "rn"), "--out", str(tmp_path / "r"), "--boot", "20"]) == 0
    text = (tmp_path / "r" / "report.md").read_text()
    assert "No results set with stored per-draw errors" in text
    assert main(["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "r2")]) == 2
    assert "not a results folder" in capsys.readouterr().err


def test_retarget_matches_the_engine_scoring_with_another_target():
    """exp(-lambda) * eps-error equals the engine's x-error (and the v relation) for the same draws."""
    from meddiff.diffusion.engine import EngineSpec, draw_errors
    from meddiff.diffusion.schedule import ShiftedCosineSchedule

    class Toy(torch.nn.Module):
        def forward(self, z, time, labels):
            return 0.4 * z + 0.2 * labels.float().reshape(-1, 1, 1, 1) * torch.tanh(z) + 0.01 * time.reshape(-1, 1, 1, 1)

    sched = ShiftedCosineSchedule(image_size=8)
    x = torch.randn(3, 1, 8, 8)
    errs = {tg: draw_errors(Toy(), x, [1, 2, 3], range(5), EngineSpec(2, sched, error_target=tg))
            for tg in ("eps", "x", "v")}
    lam = sched.logsnr(errs["eps"][1]).double().numpy()
    eps = errs["eps"][0].double().numpy()
    assert np.allclose(A.retarget(eps, lam, "x"), errs["x"][0].double().numpy(), rtol=1e-3, atol=1e-7)
    assert np.allclose(A.retarget(eps, lam, "v"), errs["v"][0].double().numpy(), rtol=1e-3, atol=1e-7)
