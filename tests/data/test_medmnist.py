"""MedMNIST npz source: real shared files and bad-file fixtures."""

from __future__ import annotations

import numpy as np
import pytest

from meddiff.config import DataConfig
from meddiff.data import build_manifest
from meddiff.errors import DataError


def _cfg(path, **kw) -> DataConfig:
    params = {"path": str(path), **kw.pop("params", {})}
    return DataConfig(source="medmnist", params=params, **kw)


def _write_npz(path, sizes=(6, 2, 2), label_shape="flat", drop=None, **override):
    arrays = {}
    for split, n in zip(("train", "val", "test"), sizes):
        arrays[f"{split}_images"] = np.random.default_rng(n).integers(0, 256, (n, 8, 8), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 2
        arrays[f"{split}_labels"] = labels[:, None] if label_shape == "column" else labels
    arrays.update(override)
    if drop:
        del arrays[drop]
    np.savez(path, **arrays)
    return path


def test_pneumoniamnist_balanced(shared_data):
    path = shared_data("pneumoniamnist_balanced/pneumoniamnist_balanced.npz")
    m = build_manifest(_cfg(path))
    assert m.class_names == ("normal", "pneumonia")
    assert {s: len(m.select(s)) for s in ("train", "val", "test")} == {"train": 2428, "val": 270, "test": 468}
    assert m.class_counts("train") == {"normal": 1214, "pneumonia": 1214}
    assert m.class_counts("val") == {"normal": 135, "pneumonia": 135}
    assert m.class_counts("test") == {"normal": 234, "pneumonia": 234}
    # Already balanced: balancing per split changes nothing.
    assert build_manifest(_cfg(path, balance=True)).fingerprint() == m.fingerprint()
    row = m.frame[m.frame["id"] == "pneumoniamnist_balanced/test/00012"].iloc[0]
    assert (row["array_key"], row["array_index"], row["path"]) == ("test_images", 12, str(path.resolve()))


def test_breastmnist(shared_data):
    m = build_manifest(_cfg(shared_data("breastmnist28/breastmnist.npz")))
    assert m.class_names == ("malignant", "normal_benign")
    assert {s: len(m.select(s)) for s in ("train", "val", "test")} == {"train": 546, "val": 78, "test": 156}
    assert m.class_counts("train") == {"malignant": 147, "normal_benign": 399}
    assert m.class_counts("test") == {"malignant": 42, "normal_benign": 114}
    balanced = build_manifest(_cfg(shared_data("breastmnist28/breastmnist.npz"), balance=True))
    assert balanced.class_counts("train") == {"malignant": 147, "normal_benign": 147}
    assert balanced.class_counts("val") == {"malignant": 21, "normal_benign": 21}
    assert balanced.class_counts("test") == {"malignant": 42, "normal_benign": 42}


@pytest.mark.parametrize("label_shape", ["flat", "column"])
def test_labels_flat_or_column_and_default_class_names(tmp_path, label_shape):
    m = build_manifest(_cfg(_write_npz(tmp_path / "toymnist.npz", label_shape=label_shape)))
    assert m.class_names == ("class_0", "class_1")
    assert m.class_counts("train") == {"class_0": 3, "class_1": 3}


def test_explicit_class_names(tmp_path):
    m = build_manifest(_cfg(_write_npz(tmp_path / "toy.npz"), params={"class_names": ["no", "yes"]}))
    assert m.class_names == ("no", "yes")


def test_missing_key_names_file_and_key(tmp_path):
    path = _write_npz(tmp_path / "toy.npz", drop="val_labels")
    with pytest.raises(DataError, match=rf"{path}: missing key 'val_labels'"):
        build_manifest(_cfg(path))


def test_mismatched_counts_name_file_and_keys(tmp_path):
    path = _write_npz(tmp_path / "toy.npz", test_labels=np.zeros(5, np.uint8))
    with pytest.raises(DataError, match=rf"{path}: key 'test_images' has 2 images but 'test_labels' has 5 labels"):
        build_manifest(_cfg(path))


def test_label_out_of_range_names_file_key_and_row(tmp_path):
    path = _write_npz(tmp_path / "toy.npz", val_labels=np.array([1, 7], np.uint8))
    with pytest.raises(DataError, match=rf"{path}: key 'val_labels' row 1 has label 7; expected 0..1"):
        build_manifest(_cfg(path, params={"class_names": ["a", "b"]}))


def test_missing_npz_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_manifest(_cfg(tmp_path / "nope.npz"))
