"""Every dashboard page run with Streamlit's AppTest on a results root the tests wrote; assertions on what is shown."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score
from streamlit.testing.v1 import AppTest

from meddiff.results import schema as S
from meddiff.results.root import ROOT_ENV

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
UNET, DIT, RES = "runs/unet/results/test", "runs/dit/results/test", "runs/resnet18/results/test"


@pytest.fixture
def app(results_root, monkeypatch):
    monkeypatch.setenv(ROOT_ENV, str(results_root["root"]))
    return AppTest.from_file(str(APP), default_timeout=60)


def ok_rows(rows):
    return [r for r in rows if r[S.STATUS] == S.STATUS_OK]


def expected_accuracy_f1(rows):
    ok = ok_rows(rows)
    y = np.array([r[S.LABEL] for r in ok])
    p = np.array([r[S.PRED] for r in ok])
    return float((y == p).mean()), float(f1_score(y, p))


def frame_with(at, column, without=None):
    """The first dataframe on the page that has ``column`` (and not ``without``)."""
    for df in at.dataframe:
        if column in df.value.columns and without not in df.value.columns:
            return df.value
    raise AssertionError(f"no dataframe with column {column!r}; have {[list(d.value.columns) for d in at.dataframe]}")


def chart_data(chart) -> list[pd.DataFrame]:
    """The data sets an st.altair_chart sent to the browser (Arrow IPC streams in the Vega-Lite proto)."""
    import pyarrow as pa

    return [pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in chart.proto.datasets]


def texts(at):
    return " ".join([m.value for m in at.markdown] + [c.value for c in at.caption] + [e.value for e in at.error]
                    + [i.value for i in at.info] + [w.value for w in at.warning])


def test_overview_shows_table1_numbers_and_filters(app, results_root):
    at = app.run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Runs overview"
    runs = frame_with(at, "run").set_index("run")
    assert list(runs.index) == [DIT, RES, UNET]
    for key, name in (("unet", UNET), ("dit", DIT), ("resnet18", RES)):
        acc, f1 = expected_accuracy_f1(results_root["rows"][key])
        assert runs.loc[name, "accuracy"] == pytest.approx(acc)
        assert runs.loc[name, "F1"] == pytest.approx(f1)
    unet_ok = ok_rows(results_root["rows"]["unet"])
    avg_acc = np.mean([r[S.PRED_AVERAGE] == r[S.LABEL] for r in unet_ok])
    assert runs.loc[UNET, "acc. average rule"] == pytest.approx(avg_acc)
    assert runs.loc[UNET, "failed"] == 1 and runs.loc[UNET, "images"] == 40 and runs.loc[UNET, "N"] == 9
    assert runs.loc[UNET, "NFE / image"] == 18 and runs.loc[RES, "NFE / image"] == 1
    assert runs.loc[RES, "method"] == "baseline" and np.isnan(runs.loc[RES, "acc. average rule"])
    # the Table 1 pivot: models x datasets, "accuracy / F1"
    table1 = at.dataframe[0].value
    acc, f1 = expected_accuracy_f1(results_root["rows"]["unet"])
    assert table1.loc["unet (diffusion)", "pneumoniamnist_balanced"] == f"{acc:.3f} / {f1:.3f}"
    assert set(table1.columns) == {"breastmnist", "pneumoniamnist_balanced"}
    # filters
    at.multiselect(key="filter_method").set_value(["baseline"]).run()
    assert list(frame_with(at, "run")["run"]) == [RES]
    at.multiselect(key="filter_method").set_value([]).run()
    at.multiselect(key="filter_dataset").set_value(["breastmnist"]).run()
    assert list(frame_with(at, "run")["run"]) == [DIT]


def threshold_expectation(rows, threshold):
    ok = [r for r in ok_rows(rows) if r[S.LABEL] >= 0]
    kept = [r for r in ok if r[S.UNCERTAINTY] <= threshold + 1e-9]
    acc = np.mean([r[S.PRED] == r[S.LABEL] for r in kept]) if kept else float("nan")
    return len(kept), len(kept) / len(ok), acc


def test_curves_page_threshold_point_and_curve_data(app, results_root):
    at = app.switch_page("views/curves.py").run()
    assert not at.exception, at.exception
    at.multiselect(key="curve_runs").set_value([UNET, RES]).run()
    for threshold in (0.95, 0.6):
        at.slider(key="threshold").set_value(threshold).run()
        assert not at.exception, at.exception
        point = frame_with(at, "accuracy (all)").set_index("run")
        for key, name in (("unet", UNET), ("resnet18", RES)):
            kept, coverage, acc = threshold_expectation(results_root["rows"][key], threshold)
            assert point.loc[name, "kept"] == kept
            assert point.loc[name, "coverage"] == pytest.approx(coverage)
            if kept:
                assert point.loc[name, "accuracy"] == pytest.approx(acc)
    # the curve's data: one row per distinct uncertainty, coverage rising to 1 and accuracy ending at the overall one
    curve = frame_with(at, "threshold", without="accuracy (all)")
    unet = curve[curve["run"] == UNET]
    uncertainties = sorted({round(r[S.UNCERTAINTY], 6) for r in ok_rows(results_root["rows"]["unet"])})
    assert len(unet) == len(uncertainties)
    assert unet["threshold"].round(6).tolist() == uncertainties
    assert unet["coverage"].is_monotonic_increasing and unet["coverage"].iloc[-1] == pytest.approx(1.0)
    for u, cov, acc in zip(unet["threshold"], unet["coverage"], unet["accuracy"]):
        kept, coverage, expected = threshold_expectation(results_root["rows"]["unet"], u)
        assert cov == pytest.approx(coverage) and acc == pytest.approx(expected)
    charts = at.get("vega_lite_chart")
    assert len(charts) == 2
    plotted = chart_data(charts[0])  # the accuracy-vs-threshold lines and the slider's rule
    lines = next(d for d in plotted if "accuracy" in d.columns)
    unet_line = lines[lines["run"] == UNET].reset_index(drop=True)
    pd.testing.assert_frame_equal(unet_line[["threshold", "accuracy", "coverage"]],
                                  unet[["threshold", "accuracy", "coverage"]].reset_index(drop=True))
    assert next(d for d in plotted if list(d.columns) == ["threshold"])["threshold"].tolist() == [0.6]
    assert "coverage" in json.dumps(json.loads(charts[1].proto.spec))


def test_curves_page_says_when_a_threshold_keeps_nothing(app):
    at = app.switch_page("views/curves.py").run()
    at.multiselect(key="curve_runs").set_value([UNET]).run()
    at.slider(key="threshold").set_value(0.0).run()
    assert not at.exception
    assert any(m.value == "no image kept" for m in at.metric)
    assert "raise the threshold to at least" in texts(at)


def test_gallery_shows_every_explained_image_with_votes(app, results_root):
    at = app.switch_page("views/gallery.py").run()
    assert not at.exception, at.exception
    images = at.get("image")
    explained = results_root["explained"]
    assert len(images) == len(explained) * 5  # input, 2 reconstructions, 2 difference maps
    captions = [c for img in images for c in img.captions]
    assert captions.count("input") == len(explained)
    assert sum(c.startswith("as normal") for c in captions) == len(explained)
    assert sum("(true class)" in c for c in captions) == len(explained)
    assert sum(c == "difference: pneumonia" for c in captions) == len(explained)
    shown = texts(at)
    for row in explained:
        assert row[S.IMAGE_ID] in shown
        votes = row[S.VOTES]
        assert f"votes: normal **{votes[0]}**, pneumonia **{votes[1]}**" in shown
        assert f"uncertainty: **{row[S.UNCERTAINTY]:.3f}**" in shown
    assert "not explained: cannot decode image" in shown  # the failed row is reported, not hidden
    assert "t_start = 0.5" in shown and "8 ancestral steps" in shown


def test_explorer_shows_votes_share_and_draws(app, results_root):
    row = next(r for r in results_root["rows"]["unet"] if r[S.IMAGE_ID].endswith("00007"))
    app.query_params["run"] = UNET
    app.query_params["image"] = row[S.IMAGE_ID]
    at = app.switch_page("views/explorer.py").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="explorer_run").value == UNET
    assert at.selectbox(key="explorer_image").value == row[S.IMAGE_ID]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["True class"] == row[S.LABEL_NAME]
    assert metrics["Prediction (vote rule)"] == row[S.PRED_NAME]
    assert metrics["Uncertainty"] == f"{row[S.UNCERTAINTY]:.3f}"
    assert metrics["Draws N · NFE"] == "9 · 18"
    votes = frame_with(at, "votes")
    assert votes["votes"].tolist() == row[S.VOTES]
    assert votes["share"].tolist() == pytest.approx(row[S.PROB])
    draws = frame_with(at, "t")
    assert len(draws) == 9
    assert draws["normal"].tolist() == pytest.approx(row[S.DRAW_ERRORS][0])
    assert draws["pneumonia"].tolist() == pytest.approx(row[S.DRAW_ERRORS][1])
    assert draws["t"].tolist() == pytest.approx(row[S.DRAW_T])
    assert len(at.get("vega_lite_chart")) == 3  # votes, vote share over draws, error vs t
    # only misclassified images
    at.toggle(key="explorer_wrong").set_value(True).run()
    wrong = {r[S.IMAGE_ID] for r in ok_rows(results_root["rows"]["unet"]) if r[S.PRED] != r[S.LABEL]}
    assert set(at.selectbox(key="explorer_image").options) == wrong


def test_explorer_on_a_baseline_explains_the_missing_draws(app):
    app.query_params["run"] = RES
    at = app.switch_page("views/explorer.py").run()
    assert not at.exception, at.exception
    assert "kept no per-draw errors" in texts(at)
    assert {m.label for m in at.metric} >= {"True class", "Prediction", "Network evaluations"}
    assert "softmax" in frame_with(at, "softmax").columns


@pytest.mark.parametrize("folder", ["../", "/etc", "runs/../../", "escape"])
def test_paths_outside_the_root_are_refused_with_a_message(app, results_root, folder, tmp_path):
    link = results_root["root"] / "escape"
    if not link.exists():
        link.symlink_to(tmp_path, target_is_directory=True)  # a symlink that leads out of the root
    at = app.run()
    at.sidebar.text_input(key="folder").input(folder).run()
    assert not at.exception, at.exception
    errors = " ".join(e.value for e in at.error)
    assert "is outside the results root" in errors and "meddiff dashboard --results" in errors
    assert not at.dataframe  # nothing was read
    for page in ("views/curves.py", "views/gallery.py", "views/explorer.py"):
        at.switch_page(page).run()
        assert "is outside the results root" in " ".join(e.value for e in at.error)
        assert not at.get("image") and not at.dataframe


def test_a_sub_folder_narrows_what_is_shown(app):
    at = app.run()
    at.sidebar.text_input(key="folder").input("runs/dit").run()
    assert list(frame_with(at, "run")["run"]) == [DIT]
    at.sidebar.text_input(key="folder").input("explanations").run()
    assert "No results sets under" in texts(at)


def test_without_a_configured_root_the_app_says_how_to_start_it(monkeypatch):
    monkeypatch.delenv(ROOT_ENV, raising=False)
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception
    assert "meddiff dashboard --results DIR" in at.error[0].value


def test_strata_page_shows_strata_with_cis_and_the_probe(app, results_root):
    from meddiff.results import strata as T

    app.query_params["run"] = RES
    at = app.switch_page("views/strata.py").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="strata_run").value == RES
    assert at.selectbox(key="strata_column").options == ["site", "view"]
    table = frame_with(at, "per class")
    assert table["stratum"].tolist() == [T.POOLED, "A", "B"]
    rows = ok_rows(results_root["rows"]["resnet18"])
    site = np.array([json.loads(r[S.METADATA])["site"] for r in rows])
    assert table["images"].tolist() == [len(rows), int((site == "A").sum()), int((site == "B").sum())]
    assert table["groups"].tolist() == [20, 11, 9]
    assert table["accuracy %"][2].endswith("(no CI)") and "9 group(s) < 10: no CIs" in table["note"][2]
    acc_a = np.mean([r[S.PRED] == r[S.LABEL] for r, s in zip(rows, site) if s == "A"])
    assert table["accuracy %"][1].startswith(f"{100 * acc_a:.1f} [")  # with its CI over patients
    assert len(at.get("vega_lite_chart")) == 1
    probe = frame_with(at, "verdict")
    assert probe["metadata used"].tolist() == ["all columns", "site", "view"]
    assert probe.set_index("metadata used").loc["site", "verdict"] == "shortcut suspected"
    assert "Verdict: **shortcut suspected**" in texts(at)
    refs = frame_with(at, "reference")
    assert "the model (pooled)" in refs["reference"].tolist()
    assert "from the metadata alone: balanced accuracy" in texts(at) or "beat the metadata alone" in texts(at)
    at.selectbox(key="strata_column").set_value("view").run()
    assert frame_with(at, "per class")["stratum"].tolist() == [T.POOLED, "AP", "PA"]


def test_strata_page_without_metadata_says_so(app):
    app.query_params["run"] = UNET
    at = app.switch_page("views/strata.py").run()
    assert not at.exception, at.exception
    assert "no metadata columns" in texts(at)


def test_explorer_shows_the_image_and_its_counterfactuals(app, results_root):
    picked = results_root["explained"][0]
    app.query_params["run"] = UNET
    app.query_params["image"] = picked[S.IMAGE_ID]
    at = app.switch_page("views/explorer.py").run()
    assert not at.exception, at.exception
    captions = [i.caption for img in at.get("image") for i in img.proto.imgs]
    assert any("stored pixels" in c for c in captions)
    assert "input" in captions and "as normal" in " ".join(captions) and "difference: pneumonia" in captions
    assert "Counterfactuals" in texts(at)


def test_explorer_says_why_an_image_cannot_be_shown(app):
    app.query_params["run"] = DIT  # its meta.json records no data config
    at = app.switch_page("views/explorer.py").run()
    assert not at.exception, at.exception
    assert "The image cannot be shown" in texts(at) and "No counterfactuals of this image" in texts(at)
