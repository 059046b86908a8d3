"""Subgroup tables and the shortcut probe on synthetic results frames with planted shortcuts (meddiff.results.strata)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from meddiff.errors import ResultsError
from meddiff.results import schema as S
from meddiff.results import strata as T


def frame(n_groups=120, per_group=3, shortcut=0.9, model_uses_site=False, seed=0, decision=False, meta=True):
    """Rows of ``n_groups`` patients with ``per_group`` images each; site A holds mostly positives (``shortcut`` is the
    share of a patient's label that follows the site), and the model either reads the site or is 80 % right."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        site = "A" if g % 2 == 0 else "B"
        label = (1 if site == "A" else 0) if rng.random() < shortcut else int(rng.integers(0, 2))
        age = int(rng.integers(20, 90))
        for k in range(per_group):
            if model_uses_site:
                pred = 1 if site == "A" else 0
            else:
                pred = label if rng.random() < 0.8 else 1 - label
            p1 = 0.75 if pred == 1 else 0.25
            row = {S.IMAGE_ID: f"img{g:04d}_{k}", S.LABEL: label, S.PRED: pred, S.PROB: [1 - p1, p1],
                   S.GROUP: f"patient{g:04d}", S.STATUS: S.STATUS_OK,
                   S.METADATA: json.dumps({"site": site, "age": age, "view": ["AP", "PA"][k % 2]}) if meta else "{}"}
            if decision:
                row[S.DECISION] = "accept" if k < 2 else "refer"
            rows.append(row)
    return pd.DataFrame(rows)


def test_expand_metadata_and_errors():
    df = frame(n_groups=4, per_group=1)
    meta = T.expand_metadata(df)
    assert set(meta.columns) == {"site", "age", "view"} and list(meta["site"]) == ["A", "B", "A", "B"]
    bad = df.copy()
    bad.loc[2, S.METADATA] = "[1, 2]"
    with pytest.raises(ResultsError, match="img0002_0.*JSON list"):
        T.expand_metadata(bad)
    bad.loc[2, S.METADATA] = "{site"
    with pytest.raises(ResultsError, match="img0002_0.*not JSON"):
        T.expand_metadata(bad)


def test_stratum_table_counts_metrics_and_cluster_ci():
    df = frame(decision=True)
    table = T.stratum_table(df, "site", n_boot=200, class_names=["normal", "pneumonia"])
    assert list(table["stratum"]) == [T.POOLED, "A", "B"]
    pooled = table.iloc[0]
    assert pooled["images"] == len(df) and pooled["groups"] == 120
    assert pooled["accuracy"] == pytest.approx((df[S.PRED] == df[S.LABEL]).mean())
    a = df[df[S.METADATA].str.contains('"site": "A"')]
    y, p = a[S.LABEL].to_numpy(), a[S.PRED].to_numpy()
    row_a = table[table["stratum"] == "A"].iloc[0]
    assert row_a["sensitivity"] == pytest.approx(((p == 1) & (y == 1)).sum() / (y == 1).sum())
    assert row_a["specificity"] == pytest.approx(((p == 0) & (y == 0)).sum() / (y == 0).sum())
    assert row_a["coverage"] == pytest.approx(2 / 3)
    assert pooled["accuracy_lo"] < pooled["accuracy"] < pooled["accuracy_hi"]
    assert pooled["coverage_lo"] == pytest.approx(2 / 3) and pooled["coverage_hi"] == pytest.approx(2 / 3)
    assert pooled["note"] == ""


def test_cluster_bootstrap_resamples_groups_not_images():
    """30 patients with 20 identical-outcome images each: a group bootstrap sees 30 units (wide CI), an image bootstrap
    would see 600 (about sqrt(20) times narrower)."""
    rng = np.random.default_rng(1)
    correct = rng.random(30) < 0.7
    codes = np.repeat(np.arange(30), 20)
    c = correct[codes].astype(float)
    lo, hi, _ = T.cluster_bootstrap(lambda idx: np.array([c[idx].mean()]), codes, n_boot=500)
    from meddiff.metrics import bootstrap_ci

    ilo, ihi = bootstrap_ci(lambda v: v.mean(), c, n_boot=500)
    assert (hi[0] - lo[0]) > 3 * (ihi - ilo)


def test_one_class_and_few_groups_get_nan_cis_with_a_reason():
    df = frame(n_groups=60, shortcut=1.0)  # site A all positive, site B all negative
    extra = frame(n_groups=4, seed=3)
    extra[S.METADATA] = extra[S.METADATA].str.replace('"site": "[AB]"', '"site": "C"', regex=True)
    extra[S.GROUP] = "x" + extra[S.GROUP]
    extra[S.IMAGE_ID] = "x" + extra[S.IMAGE_ID]
    table = T.stratum_table(pd.concat([df, extra], ignore_index=True), "site", n_boot=100).set_index("stratum")
    assert np.isnan(table.loc["A", "auc"]) and np.isnan(table.loc["A", "auc_lo"])
    assert "one class only (1)" in table.loc["A", "note"] and "specificity" in table.loc["A", "note"]
    assert np.isnan(table.loc["A", "specificity"]) and not np.isnan(table.loc["A", "sensitivity_lo"])
    assert "4 group(s) < 10: no CIs" in table.loc["C", "note"]
    assert not np.isnan(table.loc["C", "accuracy"]) and np.isnan(table.loc["C", "accuracy_lo"])
    with pytest.raises(ResultsError, match="'scanner' is in no row"):
        T.stratum_table(df, "scanner")


def test_multiclass_is_macro_one_vs_rest():
    df = frame(n_groups=30)
    df[S.LABEL] = np.arange(len(df)) % 3
    df[S.PRED] = np.where(np.arange(len(df)) % 5 == 0, (df[S.LABEL] + 1) % 3, df[S.LABEL])
    df[S.PROB] = [list(np.eye(3)[p] * 0.6 + 0.4 / 3) for p in df[S.PRED]]
    row = T.stratum_table(df, "view", n_boot=50).iloc[0]
    recalls = [(df[S.PRED][df[S.LABEL] == c] == c).mean() for c in range(3)]
    assert row["sensitivity"] == pytest.approx(np.mean(recalls))
    assert row["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    assert 0.5 < row["auc"] <= 1


def test_probe_flags_a_planted_shortcut_and_the_model_that_uses_it():
    probe = T.shortcut_probe(frame(model_uses_site=True), n_boot=200)
    assert probe.available and probe.verdict == "shortcut suspected"
    by = probe.probe.set_index("features")
    assert by.loc["site", "auc_lo"] > T.SHORTCUT_AUC and by.loc["site", "verdict"] == "shortcut suspected"
    assert by.loc["age", "verdict"] != "shortcut suspected"
    assert by.loc["all columns", "balanced_accuracy"] > 0.8
    within = probe.within.set_index("column")
    # a model that only reads the site is at chance within a site and far better pooled
    assert within.loc["site", "within_balanced_accuracy"] == pytest.approx(0.5)
    assert within.loc["site", "pooled_balanced_accuracy"] > 0.85
    assert within.loc["site", "difference_hi"] < 0
    refs = probe.baselines.set_index("reference")
    assert refs.loc["the model (pooled)", "balanced_accuracy"] == pytest.approx(
        within.loc["site", "pooled_balanced_accuracy"])
    # the site reader is no better than the metadata-only probe (they make nearly the same predictions)
    assert "beats the metadata alone" not in probe.model_vs_probe["text"]
    assert probe.model_vs_probe["difference_lo"] <= 0


def test_a_model_that_reads_the_image_beats_the_metadata():
    probe = T.shortcut_probe(frame(shortcut=0.3, seed=2), n_boot=200)
    assert probe.model_vs_probe["difference_lo"] < probe.model_vs_probe["difference"] < probe.model_vs_probe[
        "difference_hi"]
    assert probe.model_vs_probe["text"].startswith("The model beats the metadata alone")


def test_probe_without_a_shortcut_and_without_metadata():
    probe = T.shortcut_probe(frame(shortcut=0.0, seed=5), columns=["site", "age"], n_boot=200)
    assert probe.verdict in ("no evidence of a shortcut", "inconclusive")
    assert probe.probe.set_index("features").loc["site", "auc_lo"] < T.SHORTCUT_AUC
    assert set(probe.probe["features"]) == {"all columns", "site", "age"}
    none = T.shortcut_probe(frame(n_groups=10, meta=False))
    assert not none.available and "no metadata columns" in none.note
    with pytest.raises(ResultsError, match="'scanner'"):
        T.shortcut_probe(frame(n_groups=10), columns=["scanner"])


def test_image_pixels_follow_the_recorded_data_config(tmp_path):
    """The explorer's image: located through checkpoint_metadata.config.data (medmnist ids, image_csv paths)."""
    from PIL import Image

    from meddiff.results.image import image_pixels

    pixels = np.random.default_rng(0).integers(0, 256, (5, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "tiny.npz", test_images=pixels, test_labels=np.zeros(5))
    meta = {"checkpoint_metadata": {"config": {"data": {"source": "medmnist",
                                                        "params": {"path": str(tmp_path / "tiny.npz")}}}}}
    assert (image_pixels(meta, "tiny/test/00003") == pixels[3]).all()
    with pytest.raises(ResultsError, match="has 5 images"):
        image_pixels(meta, "tiny/test/00009")
    (tmp_path / "imgs").mkdir()
    Image.fromarray(pixels[1]).save(tmp_path / "imgs" / "a.png")
    (tmp_path / "labels.csv").write_text("path,y\nimgs/a.png,1\n")
    meta = {"checkpoint_metadata": {"config": {"data": {"source": "image_csv",
                                                        "params": {"csv": str(tmp_path / "labels.csv")}}}}}
    assert (image_pixels(meta, "imgs/a") == pixels[1]).all()
    with pytest.raises(ResultsError, match="no row with id 'imgs/b'"):
        image_pixels(meta, "imgs/b")
    with pytest.raises(ResultsError, match="records no data config"):
        image_pixels({}, "x")
    with pytest.raises(ResultsError, match="'phantom' cannot be shown"):
        image_pixels({"checkpoint_metadata": {"config": {"data": {"source": "phantom", "params": {}}}}}, "x")
