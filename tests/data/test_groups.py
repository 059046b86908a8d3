"""Groups and metadata: a CheXpert-layout tree with several studies per patient never puts a patient in two splits
(with and without balancing, and in cross-validation folds); image_csv group_column / metadata_columns; whole-group
balancing; without groups the split is exactly ``stratified_split``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from meddiff.config import DataConfig
from meddiff.data import build_manifest
from meddiff.data.manifest import NO_GROUPS, balance, balance_groups, stratified_group_split, stratified_split
from meddiff.errors import DataError

COLUMNS = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Pleural Effusion"]


def _chexpert_tree(tmp_path, write_image, n_patients=16):
    """Patients with 2-4 studies each, one frontal view per study (and a lateral in study 1, dropped); labels mixed
    within some patients (a patient may have effusion in one study and no finding in another)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "CheXpert-v1.0-small"
    rows = []
    for p in range(n_patients):
        sex = "Female" if p % 2 else "Male"
        for s in range(1, 2 + p % 3 + 1):
            effusion = (p + s) % 3 == 0 if p % 4 else True  # every 4th patient effusion only; others mixed
            age = 30 + 4 * p + s
            rel = f"train/patient{p:05d}/study{s}/view1_frontal.jpg"
            rows.append([f"CheXpert-v1.0-small/{rel}", sex, age, "Frontal", "AP" if s % 2 else "PA",
                         "" if effusion else "1.0", "1.0" if effusion else "0.0"])
            write_image(root / rel, size=(20, 24), mode="L", fmt="PNG", seed=int(rng.integers(1 << 30)))
        rows.append([f"CheXpert-v1.0-small/train/patient{p:05d}/study1/view2_lateral.jpg", sex, 40, "Lateral", "",
                     "1.0", ""])
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=COLUMNS).to_csv(root / "train.csv", index=False)
    pd.DataFrame([], columns=COLUMNS).to_csv(root / "valid.csv", index=False)
    return root


def _patients_per_split(m):
    return m.frame.groupby("group")["split"].nunique()


@pytest.mark.parametrize("kw", [{}, {"balance": True}, {"split_seed": 3, "split_fractions": (0.6, 0.2, 0.2)}])
def test_chexpert_patients_never_cross_splits(tmp_path, write_image, kw):
    root = _chexpert_tree(tmp_path, write_image)
    m = build_manifest(DataConfig(source="chexpert", params={"root": str(root)}, **kw))
    assert m.grouping == "patient (from Path)"
    assert (_patients_per_split(m) == 1).all()
    assert m.checks["groups"] == {"n_groups": m.frame["group"].nunique(), "across_splits": 0, "examples": {}}
    assert set(m.frame["split"]) == {"train", "val", "test"}
    # group = the patient component of Path; several studies per patient are present
    assert (m.frame["group"] == m.frame["id"].str.extract(r"(patient\d+)")[0]).all()
    assert m.frame.groupby("group").size().max() >= 3
    meta = json.loads(m.frame.set_index("id").at["CheXpert-v1.0-small/train/patient00003/study2/view1_frontal",
                                                 "metadata"]) if not kw.get("balance") else None
    if meta is not None:
        assert meta == {"sex": "Female", "age_band": "40-59", "view": "PA"}  # age 30 + 12 + 2 = 44
    if kw.get("balance"):
        counts = m.class_counts()
        assert counts["no_finding"] <= min(build_manifest(DataConfig(source="chexpert", params={"root": str(root)}))
                                           .class_counts().values())
        assert abs(counts["no_finding"] - counts["pleural_effusion"]) <= 4  # whole patients, 1-4 studies each


def test_chexpert_cv_folds_keep_patients_whole(tmp_path, write_image):
    root = _chexpert_tree(tmp_path, write_image)
    for fold in range(3):
        m = build_manifest(DataConfig(source="chexpert", params={"root": str(root)}, cv_folds=3, cv_fold=fold,
                                      balance=True))
        assert (m.frame.groupby("group")["fold"].nunique() == 1).all()
        assert (_patients_per_split(m) == 1).all()
        assert m.checks["groups"]["across_splits"] == 0
        assert set(m.frame.loc[m.frame["split"] == "test", "fold"]) == {fold}


def test_chexpert_age_band_edges_and_bad_age(tmp_path, write_image):
    root = _chexpert_tree(tmp_path, write_image, n_patients=4)
    table = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    table.loc[0, "Age"] = "sixty"
    table.to_csv(root / "train.csv", index=False)
    with pytest.raises(DataError, match=r"train.csv line 2 \(data row 1\): age 'sixty'; expected an age in years"):
        build_manifest(DataConfig(source="chexpert", params={"root": str(root)}))


def _csv_fixture(tmp_path, write_image, n=24, groups=None, extra=None):
    rows = []
    for i in range(n):
        write_image(tmp_path / "img" / f"{i:03d}.png", size=(16, 16), mode="L", fmt="PNG", seed=i)
        rows.append({"path": f"img/{i:03d}.png", "label": str(i % 3 == 0),
                     "patient": groups[i] if groups is not None else f"P{i // 3}",
                     "sex": "F" if i % 2 else "M", "site": "" if i == 5 else f"site{i % 2}", **(extra or {})})
    csv = tmp_path / "labels.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def _csv_cfg(csv, **params):
    return {"csv": str(csv), "label_column": "label", "label_names": {"False": "neg", "True": "pos"}, **params}


def test_image_csv_group_and_metadata_columns(tmp_path, write_image):
    csv = _csv_fixture(tmp_path, write_image)
    m = build_manifest(DataConfig(source="image_csv", params=_csv_cfg(csv, group_column="patient",
                                                                       metadata_columns=["sex", "site"])))
    assert m.grouping == "patient (column of labels.csv)"
    assert m.frame["group"].nunique() == 8
    assert (_patients_per_split(m) == 1).all()
    meta = m.frame.set_index("id")["metadata"].map(json.loads)
    assert meta["img/004"] == {"sex": "M", "site": "site0"}
    assert meta["img/005"] == {"sex": "F"}  # blank cells are left out
    assert m.metadata_columns() == {"sex": {"F": 12, "M": 12}, "site": {"site0": 12, "site1": 11}}


def test_image_csv_blank_group_names_the_line(tmp_path, write_image):
    groups = [f"P{i // 3}" for i in range(24)]
    groups[6] = " "
    csv = _csv_fixture(tmp_path, write_image, groups=groups)
    with pytest.raises(DataError, match=r"labels.csv line 8 \(data row 7\): column 'patient' is blank"):
        build_manifest(DataConfig(source="image_csv", params=_csv_cfg(csv, group_column="patient")))
    with pytest.raises(DataError, match=r"missing column\(s\) \['ward'\]"):
        build_manifest(DataConfig(source="image_csv", params=_csv_cfg(csv, metadata_columns=["ward"])))


@pytest.mark.parametrize("balanced", [False, True])
def test_no_groups_split_is_exactly_stratified_split(tmp_path, write_image, balanced):
    csv = _csv_fixture(tmp_path, write_image, n=40)
    cfg = DataConfig(source="image_csv", params=_csv_cfg(csv), balance=balanced, split_seed=7)
    m = build_manifest(cfg)
    assert m.grouping == NO_GROUPS and (m.frame["group"] == m.frame["id"]).all()
    ids = sorted(f"img/{i:03d}" for i in range(40))
    frame = pd.DataFrame({"id": ids, "label": [int(int(i[-3:]) % 3 == 0) for i in ids],
                          "group": ids})
    if balanced:
        frame = balance(frame, 7, 2)
    expected = stratified_split(frame["label"].to_numpy(), (0.8, 0.1, 0.1), 7)
    assert m.frame["id"].tolist() == frame["id"].tolist()
    assert m.frame["split"].tolist() == list(expected)


def test_stratified_group_split_keeps_groups_and_class_mix():
    rng = np.random.default_rng(1)
    sizes = rng.integers(1, 5, 300)
    groups = np.repeat([f"g{i}" for i in range(300)], sizes)
    labels = np.repeat(rng.integers(0, 2, 300), sizes)
    labels[::7] = 1 - labels[::7]  # some mixed-label groups
    split = stratified_group_split(labels, groups, (0.7, 0.15, 0.15), seed=4)
    table = pd.DataFrame({"g": groups, "s": split, "y": labels})
    assert (table.groupby("g")["s"].nunique() == 1).all()
    for cls in (0, 1):
        share = table[table["y"] == cls]["s"].value_counts(normalize=True)
        assert abs(share["train"] - 0.7) < 0.02 and abs(share["val"] - 0.15) < 0.02 and abs(share["test"] - 0.15) < 0.02
    assert (stratified_group_split(labels, groups, (0.7, 0.15, 0.15), seed=4) == split).all()
    assert not (stratified_group_split(labels, groups, (0.7, 0.15, 0.15), seed=5) == split).all()
    assert set(stratified_group_split(labels, groups, (0.9, 0.0, 0.1), seed=4)) == {"train", "test"}


def test_balance_groups_keeps_whole_groups_and_caps_every_class():
    # class 1 has 10 rows in groups of 2; class 0 has 40 rows in groups of 4; one mixed group (2 of each)
    groups = [f"a{i // 4}" for i in range(40)] + [f"b{i // 2}" for i in range(10)] + ["mix"] * 4
    labels = [0] * 40 + [1] * 10 + [0, 0, 1, 1]
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(54)], "label": labels, "group": groups})
    kept = balance_groups(frame, seed=0, n_classes=2)
    counts = kept["label"].value_counts()
    # all of the smallest class (12 with the mixed group); class 0: the mixed group's 2 + two groups of 4 (a third
    # group would exceed 12), so whole groups leave it at 10
    assert counts[1] == 12 and counts[0] == 10
    sizes = frame.groupby("group").size()
    assert (kept.groupby("group").size() == sizes[kept["group"].unique()]).all()  # no group cut
    assert kept["id"].tolist() == sorted(kept["id"].tolist(), key=lambda r: int(r[1:]))  # order kept
    assert not balance_groups(frame, seed=1, n_classes=2)["id"].equals(kept["id"])
    with pytest.raises(DataError, match=r"class index\(es\) \[2\] have no rows"):
        balance_groups(frame, seed=0, n_classes=3)
