"""What the dashboard reads through meddiff.results, without Streamlit: the root guard, discovery, and the frames the
pages show."""

import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from meddiff.results.summary import summarize_results
from meddiff.errors import ResultsError
from meddiff.results import curves as C
from meddiff.results import explain_schema as X
from meddiff.results import image as I
from meddiff.results import schema as S
from meddiff.results.explanations import read_index
from meddiff.results.gallery import explanation_info, gallery_items
from meddiff.results.overview import overview_row
from meddiff.results.root import OutsideRootError, ResultsRoot, signature
from meddiff.results.runs import open_results, scored


def test_root_resolves_inside_and_refuses_outside(results_root, tmp_path):
    root = ResultsRoot(results_root["root"])
    base = root.path
    assert root.resolve("") == base and root.resolve("runs/unet") == base / "runs" / "unet"
    assert root.resolve(str(base / "runs")) == base / "runs"
    assert root.resolve("runs/../explanations") == base / "explanations"
    (base / "out-link").symlink_to(tmp_path, target_is_directory=True)
    try:
        for bad in ("..", "../x", "/etc/passwd", str(tmp_path), "runs/../../x", "out-link", "out-link/y"):
            with pytest.raises(OutsideRootError, match="outside the results root"):
                root.resolve(bad)
    finally:
        (base / "out-link").unlink()
    with pytest.raises(ResultsError, match="not a folder"):
        ResultsRoot(tmp_path / "missing")


def test_discovery_finds_results_sets_and_explanations(results_root):
    root = ResultsRoot(results_root["root"])
    assert [root.name(p) for p in root.find_runs()] == ["runs/dit/results/test", "runs/resnet18/results/test",
                                                         "runs/unet/results/test"]
    assert [root.name(p) for p in root.find_explanations()] == ["explanations/unet"]
    assert [root.name(p) for p in root.find_runs("runs/unet")] == ["runs/unet/results/test"]
    info = root.open_run("runs/unet/results/test")
    assert (info.dataset, info.method, info.backbone, info.n_draws, info.class_names) == (
        "pneumoniamnist_balanced", "diffusion", "unet", 9, ("normal", "pneumonia"))
    base = root.open_run("runs/resnet18/results/test")
    assert base.method == "baseline" and base.n_draws is None and base.rule is None


def test_overview_row_is_summarize_results(results_root):
    root = ResultsRoot(results_root["root"])
    for name in ("runs/unet/results/test", "runs/resnet18/results/test"):
        info = root.open_run(name)
        df = info.rows
        summary = summarize_results(df, 2, votes=info.votes)
        row = overview_row(info, df)
        key = "accuracy_vote" if info.method == "diffusion" else "accuracy"
        assert row["accuracy"] == summary[key] and row["images"] == summary["labelled"]
        assert row["acc. @50% coverage"] == summary[f"{key}_at_50pct"]


def test_threshold_curve_matches_brute_force(results_root):
    df = open_results(results_root["paths"]["unet"]).rows
    curve = C.threshold_curve(df)
    ok = scored(df)
    unc, correct = ok[S.UNCERTAINTY].to_numpy(), (ok[S.PRED] == ok[S.LABEL]).to_numpy()
    for _, r in curve.iterrows():
        keep = unc <= r["threshold"] + 1e-9
        assert r["kept"] == keep.sum() and r["accuracy"] == pytest.approx(correct[keep].mean())
        point = C.at_threshold(df, r["threshold"])
        assert point["kept"] == r["kept"] and point["accuracy"] == pytest.approx(r["accuracy"])
    assert C.at_threshold(df, -1.0)["kept"] == 0 and np.isnan(C.at_threshold(df, -1.0)["accuracy"])
    cov = C.coverage_curve(df)
    assert len(cov) == len(ok) and cov["accuracy"].iloc[-1] == pytest.approx(correct.mean())
    assert len(C.thin(cov, 10)) <= 10 and C.thin(cov, 10)["k"].iloc[-1] == len(ok)


def test_draws_and_vote_share(results_root):
    df = open_results(results_root["paths"]["unet"]).rows
    row = I.image_row(df, "pneumoniamnist_balanced/test/00003")
    draws = I.draws_frame(row, ["normal", "pneumonia"])
    assert len(draws) == 18 and draws.groupby("draw")["vote"].sum().eq(1).all()
    votes = draws[draws["vote"]].groupby("class").size().reindex(["normal", "pneumonia"], fill_value=0)
    assert votes.tolist() == list(row[S.VOTES])
    share = I.vote_share_over_draws(draws)
    last = share[share["draw"] == 9].set_index("class")["share"]
    assert last.tolist() == pytest.approx(list(row[S.PROB]))
    assert I.draws_frame(I.image_row(open_results(results_root["paths"]["resnet18"]).rows, row[S.IMAGE_ID]), []) is None
    with pytest.raises(ResultsError, match="not in this results set"):
        I.image_row(df, "nope")


def test_gallery_items_join_votes_and_refuse_paths_outside_the_root(results_root, tmp_path):
    root = ResultsRoot(results_root["root"])
    info = explanation_info(root, results_root["paths"]["explanations"])
    assert info.results == results_root["paths"]["unet"].resolve()
    index = read_index(info.path)
    items = gallery_items(root, info, index, open_results(info.results).rows)
    assert [i["image_id"] for i in items][:3] == [r[S.IMAGE_ID] for r in results_root["explained"]]
    first = items[0]
    assert first["votes"] == dict(zip(["normal", "pneumonia"], results_root["explained"][0][S.VOTES]))
    assert first["input"].is_file() and [c["class_name"] for c in first["classes"]] == ["normal", "pneumonia"]
    assert items[-1]["error"] == "cannot decode image"
    # an index whose PNG paths lead out of the root is refused per image, never read
    bad_root = ResultsRoot(tmp_path)
    bad_dir = tmp_path / "bad-explanations"
    shutil.copytree(info.path, bad_dir)
    table = pq.read_table(bad_dir / "index" / "shard-000000.parquet").to_pandas()
    table[X.INPUT_PNG] = table[X.INPUT_PNG].where(table[X.INPUT_PNG].isna(), "../../../../etc/hostname")
    pq.write_table(X.to_table(table.replace({np.nan: None}).to_dict("records")), bad_dir / "index" / "shard-000000.parquet")
    bad_info = explanation_info(bad_root, bad_dir)
    assert bad_info.results is None and "outside the results root" in bad_info.results_note
    bad_items = gallery_items(bad_root, bad_info, read_index(bad_dir))
    assert all("outside the results root" in i["error"] for i in bad_items[:3])
    assert all(i["input"] is None for i in bad_items)


def test_signature_changes_when_a_shard_is_added(results_root, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(results_root["paths"]["dit"], run)
    before = signature(run)
    rows = pd.read_parquet(run / "shard-000000.parquet").head(1)
    rows.to_parquet(run / "shard-000002.parquet")
    assert signature(run) != before
