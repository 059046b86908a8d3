"""Manifest invariants, split, balance, fingerprint and the registry factory."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from meddiff.config import DataConfig
from meddiff.data import MANIFEST_COLUMNS, SOURCES, Manifest, build_manifest
from meddiff.data.manifest import balance, manifest_frame, stratified_split
from meddiff.errors import ConfigError, DataError


def _manifest(n=10, labels=None, splits=None, ids=None) -> Manifest:
    labels = labels if labels is not None else [i % 2 for i in range(n)]
    frame = manifest_frame(
        ids=ids or [f"x/{i}" for i in range(len(labels))], labels=labels, source="test",
        paths=[f"/data/{i}.png" for i in range(len(labels))], splits=splits or ["train"] * len(labels),
    )
    return Manifest(frame, ("a", "b"), "toy")


def test_frame_has_exactly_the_manifest_columns():
    assert tuple(_manifest().frame.columns) == MANIFEST_COLUMNS
    assert set(SOURCES) == {"medmnist", "image_csv", "chexpert", "isic_challenge", "phantom", "dicom", "nih_cxr14", "mimic_cxr"}


def test_stratified_split_is_deterministic_and_stratified():
    labels = np.array([0] * 1000 + [1] * 250 + [2] * 31)
    a = stratified_split(labels, (0.8, 0.1, 0.1), seed=3)
    assert (a == stratified_split(labels, (0.8, 0.1, 0.1), seed=3)).all()
    assert not (a == stratified_split(labels, (0.8, 0.1, 0.1), seed=4)).all()
    for cls, n in ((0, 1000), (1, 250), (2, 31)):
        counts = {s: int(((labels == cls) & (a == s)).sum()) for s in ("train", "val", "test")}
        assert sum(counts.values()) == n
        for split, fraction in zip(("train", "val", "test"), (0.8, 0.1, 0.1)):
            assert abs(counts[split] - fraction * n) < 1  # largest-remainder rounding
    # Adding a class does not reshuffle the others (each class has its own generator).
    b = stratified_split(labels[:1250], (0.8, 0.1, 0.1), seed=3)
    assert (b == a[:1250]).all()


def test_stratified_split_rejects_bad_fractions():
    with pytest.raises(ConfigError, match="fractions"):
        stratified_split([0, 1], (0.5, 0.5, 0.5), seed=0)


def test_balance_undersamples_to_smallest_class_seeded():
    frame = _manifest(labels=[0] * 30 + [1] * 7).frame
    out = balance(frame, seed=1)
    assert out["label"].value_counts().to_dict() == {0: 7, 1: 7}
    assert out["id"].tolist() == balance(frame, seed=1)["id"].tolist()
    assert out["id"].tolist() != balance(frame, seed=2)["id"].tolist()
    assert set(frame[frame.label == 1]["id"]) <= set(out["id"])  # the smallest class is kept whole
    with pytest.raises(DataError, match=r"class index\(es\) \[2\]"):
        balance(frame, seed=1, n_classes=3)


def test_fingerprint_is_stable_order_free_and_sensitive():
    m = _manifest()
    shuffled = Manifest(m.frame.sample(frac=1, random_state=0).reset_index(drop=True), m.class_names, m.name)
    moved = Manifest(m.frame.assign(path="/elsewhere/x.png"), m.class_names, "renamed")
    assert m.fingerprint() == shuffled.fingerprint() == moved.fingerprint()
    assert len(m.fingerprint()) == 64
    relabelled = m.frame.copy()
    relabelled.loc[0, "label"] = 1 - relabelled.loc[0, "label"]
    assert Manifest(relabelled, m.class_names, m.name).fingerprint() != m.fingerprint()
    assert Manifest(m.frame, ("a", "c"), m.name).fingerprint() != m.fingerprint()


def test_select_and_class_counts():
    m = _manifest(labels=[0, 1, 1, 0, 1], splits=["train", "train", "val", "test", "test"])
    assert len(m.select("train")) == 2 and len(m.select("all")) == 5
    assert m.class_counts() == {"a": 2, "b": 3}
    assert m.class_counts("test") == {"a": 1, "b": 1}
    with pytest.raises(ConfigError, match="split"):
        m.select("training")


def test_validate_duplicate_id_names_id_and_both_rows():
    m = _manifest(n=4, ids=["x/0", "x/1", "x/0", "x/3"])
    with pytest.raises(DataError, match=r"duplicate id 'x/0' for /data/0.png and /data/2.png"):
        m.validate()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f.assign(label=[0, 1, 2, 0]), r"id 'x/2' \(/data/2.png\) has label 2, expected 0..1"),
        (lambda f: f.assign(split=["train", "dev", "val", "test"]), r"id 'x/1' has split 'dev'"),
        (lambda f: f.drop(columns=["array_key"]), r"missing column\(s\) \['array_key'\]"),
    ],
)
def test_validate_rejects_bad_rows(change, message):
    m = _manifest(n=4)
    with pytest.raises(DataError, match=message):
        Manifest(change(m.frame), m.class_names, m.name).validate()


def test_unknown_source_lists_known_names():
    with pytest.raises(ConfigError, match=r"unknown source 'mnist'.*'chexpert'.*'phantom'"):
        build_manifest(DataConfig(source="mnist"))


def test_unknown_params_key_is_config_error():
    with pytest.raises(ConfigError, match=r"data.params: unknown key\(s\) \['n_per_klass'\]"):
        build_manifest(DataConfig(source="phantom", params={"n_per_klass": 3}))


def test_missing_required_param_is_config_error():
    with pytest.raises(ConfigError, match="data.params.*path"):
        build_manifest(DataConfig(source="medmnist", params={}))


def test_build_manifest_split_does_not_depend_on_row_order(tmp_path, write_image):
    rows = []
    for i in range(40):
        write_image(tmp_path / f"img{i:02d}.png", seed=i)
        rows.append({"path": f"img{i:02d}.png", "y": i % 2})
    params = {"label_column": "y", "label_names": {0: "a", 1: "b"}}
    pd.DataFrame(rows).to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame(rows[::-1]).to_csv(tmp_path / "b.csv", index=False)
    a = build_manifest(DataConfig(source="image_csv", params={**params, "csv": str(tmp_path / "a.csv")}))
    b = build_manifest(DataConfig(source="image_csv", params={**params, "csv": str(tmp_path / "b.csv")}))
    assert a.fingerprint() == b.fingerprint()
