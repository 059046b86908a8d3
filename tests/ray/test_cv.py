"""``meddiff cv`` on a real local Ray cluster and real BreastMNIST: 2 stratified group folds, each a Ray Train run of a
tiny diffusion classifier scored by Ray Data jobs; the pooled out-of-fold set, the summary, the report, and a second
run that resumes (done folds skipped, a deleted fold's results re-scored only)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from meddiff.cli import main
from meddiff.config import load_config
from meddiff.cv.pool import check_out_of_fold
from meddiff.cv.run import fold_config, run_cv
from meddiff.cv.summary import FIGURES
from meddiff.data import build_manifest
from meddiff.errors import ResultsError
from meddiff.results import schema as S
from meddiff.results.store import read_meta, read_results

pytestmark = pytest.mark.ray

FOLDS = 2
TINY = {"block_out_channels": [16, 32], "attention": [False, True], "norm_num_groups": 8}


@pytest.fixture
def breast_npz():
    from tests.conftest import require_data

    return require_data("breastmnist28/breastmnist.npz")


def _cfg(tmp_path, npz):
    return load_config("demo-breast", {
        "output_dir": str(tmp_path / "runs"), "data.params.path": str(npz), "model.params": TINY,
        "train.steps": 4, "train.checkpoint_every": 4, "train.log_every": 4, "train.batch_size": 32,
        "train.warmup_steps": 0, "train.ema_warmup": 0, "score.n_draws": 3, "score.shard_size": 128,
        "ray.num_workers": 1, "ray.cpus_per_worker": 1.0, "ray.actors": 1, "ray.cpus_per_actor": 1.0,
        "ray.threads_per_actor": 1,
    })


def test_cv_pools_every_row_once_summarises_reports_and_resumes(ray_local, breast_npz, tmp_path):
    cfg = _cfg(tmp_path, breast_npz)
    out = tmp_path / "cv"
    lines: list[str] = []
    summary = run_cv(cfg, FOLDS, out, log=lines.append, n_boot=50, positive="malignant")

    manifest = build_manifest(fold_config(cfg, FOLDS, 0, out).data)
    assert len(manifest) == 780  # BreastMNIST's official splits pooled
    fold_of = dict(zip(manifest.frame["id"].astype(str), manifest.frame["fold"].astype(int)))
    for k in range(FOLDS):
        frame = build_manifest(fold_config(cfg, FOLDS, k, out).data).frame
        test_groups = set(frame.loc[frame["split"] == "test", "group"])
        assert not test_groups & set(frame.loc[frame["split"] != "test", "group"])  # no group on both sides
        assert (frame.loc[frame["split"] == "test", "fold"] == k).all()
        assert any(p.name.startswith("step_") for p in (out / f"fold-{k}").iterdir())  # a Ray Train run's bundles

    oof = read_results(out / "oof")
    assert len(oof) == 780 and oof[S.IMAGE_ID].is_unique
    assert set(oof[S.IMAGE_ID]) == set(fold_of)
    assert all(int(f) == fold_of[i] for i, f in zip(oof[S.IMAGE_ID], oof[S.FOLD]))
    meta = read_meta(out / "oof")
    assert meta["method"] == "diffusion" and meta["class_names"] == ["malignant", "normal_benign"]
    assert meta["cv"]["folds"] == FOLDS and len(meta["cv"]["model_ids"]) == FOLDS
    assert all(meta["cv"]["model_ids"]) and len(set(meta["cv"]["model_ids"])) == FOLDS
    assert [f["model_id"] for f in summary["folds"]] == meta["cv"]["model_ids"]
    val = read_results(out / "oof_val")
    assert set(val[S.FOLD]) == set(range(FOLDS))
    for k in range(FOLDS):  # the val rows of fold k come from fold k's training side only
        ids = set(val.loc[val[S.FOLD] == k, S.IMAGE_ID])
        assert ids and not any(fold_of[i] == k for i in ids)

    # per-fold figures from each fold's own rows; mean ± sd across them; pooled over all rows
    for k, fold in enumerate(summary["folds"]):
        rows = read_results(out / f"fold-{k}" / "results")
        assert fold["n"] == len(rows) and fold["accuracy"] == pytest.approx((rows[S.PRED] == rows[S.LABEL]).mean())
        malignant = rows[S.LABEL] == 0
        assert fold["sensitivity"] == pytest.approx((rows.loc[malignant, S.PRED] == 0).mean())
    for key, _ in FIGURES:
        values = np.array([f[key] for f in summary["folds"]], dtype=float)
        assert summary["mean_sd"][key]["mean"] == pytest.approx(values.mean(), nan_ok=True)
        assert summary["mean_sd"][key]["sd"] == pytest.approx(values.std(ddof=1), nan_ok=True)
    assert summary["pooled"]["n"] == 780
    assert summary["pooled"]["accuracy"] == pytest.approx((oof[S.PRED] == oof[S.LABEL]).mean())
    lo, hi = summary["pooled_ci"]["accuracy"]
    assert lo <= summary["pooled"]["accuracy"] <= hi
    saved = json.loads((out / "cv_summary.json").read_text())
    assert saved["mean_sd"]["accuracy"] == pytest.approx(summary["mean_sd"]["accuracy"])
    md = (out / "cv_summary.md").read_text()
    assert "mean ± sd" in md and "pooled OOF" in md and "'malignant' as the positive class" in md

    # the report reads the pooled set like any other results set
    assert main(["report", f"oof={out / 'oof'}", "--out", str(tmp_path / "report"), "--boot", "20",
                 "--repeats", "2"]) == 0
    assert "oof" in (tmp_path / "report" / "report.md").read_text()

    # a second run: fold 0 skipped; fold 1's deleted test results re-scored, nothing trained again
    bundles = sorted(p.name for k in range(FOLDS) for p in (out / f"fold-{k}").glob("step_*"))
    import shutil

    shutil.rmtree(out / "fold-1" / "results")
    lines.clear()
    again = run_cv(cfg, FOLDS, out, log=lines.append, n_boot=50, positive="malignant")
    text = "\n".join(lines)
    assert "fold 1/2: done earlier" in text and "fold 2/2: trained earlier" in text
    assert "fold 2/2: scoring the test split" in text and "fold 2/2: val split scored earlier" in text
    assert "training" not in text and "fold 1/2: scoring" not in text
    assert sorted(p.name for k in range(FOLDS) for p in (out / f"fold-{k}").glob("step_*")) == bundles
    assert again["pooled"]["n"] == 780
    assert again["folds"][0] == summary["folds"][0]  # the untouched fold's figures are unchanged
    assert again["folds"][1]["accuracy"] == pytest.approx(summary["folds"][1]["accuracy"])  # seeded draws


def test_out_of_fold_check_names_a_duplicate_a_missing_row_and_a_group_in_two_folds():
    frame = pd.DataFrame({S.IMAGE_ID: ["a", "b", "c"], S.GROUP: ["p1", "p1", "p2"], S.FOLD: [0, 0, 1]})
    check_out_of_fold(frame, ["a", "b", "c"], "oof")
    with pytest.raises(ResultsError, match="'a' appears in more than one fold"):
        check_out_of_fold(frame.assign(**{S.IMAGE_ID: ["a", "a", "c"]}), ["a", "c"], "oof")
    with pytest.raises(ResultsError, match=r"1 manifest rows have no out-of-fold result \(first \['d'\]\)"):
        check_out_of_fold(frame, ["a", "b", "c", "d"], "oof")
    with pytest.raises(ResultsError, match="group 'p1' appears in 2 folds"):
        check_out_of_fold(frame.assign(**{S.FOLD: [0, 1, 1]}), ["a", "b", "c"], "oof")


def test_cv_command_refuses_one_fold_and_a_limit(capsys):
    assert main(["cv", "demo-breast", "--folds", "1"]) == 2
    assert "--folds: expected an integer >= 2, got 1" in capsys.readouterr().err
    assert main(["cv", "demo-breast", "--folds", "3", "--set", "score.limit=10"]) == 2
    assert "score.limit: expected 0 for cross-validation" in capsys.readouterr().err
