"""ISIC 2020 challenge source on a small fixture."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from meddiff.config import DataConfig
from meddiff.data import build_manifest
from meddiff.errors import DataError


def _fixture(tmp_path, write_image, targets, missing=()):
    names = [f"ISIC_{i:07d}" for i in range(len(targets))]
    for i, name in enumerate(names):
        if name not in missing:
            write_image(tmp_path / "train" / f"{name}.jpg", size=(30, 20), fmt="JPEG", seed=i)
    csv = tmp_path / "ISIC_2020_Training_GroundTruth.csv"
    patients = [f"IP_{i}" for i in range(len(names))]  # one image per patient: per-split class counts as stratified
    pd.DataFrame({"image_name": names, "patient_id": patients, "target": targets}).to_csv(csv, index=False)
    return csv, names


def _cfg(tmp_path, csv, **kw):
    return DataConfig(source="isic_challenge", params={"csv": str(csv), "image_dir": str(tmp_path / "train")}, **kw)


def test_counts_balance_and_split(tmp_path, write_image):
    csv, names = _fixture(tmp_path, write_image, [0] * 30 + [1] * 10)
    m = build_manifest(_cfg(tmp_path, csv))
    assert m.class_names == ("benign", "melanoma")
    assert m.class_counts() == {"benign": 30, "melanoma": 10}
    assert m.class_counts("train") == {"benign": 24, "melanoma": 8}
    assert m.class_counts("val") == {"benign": 3, "melanoma": 1}
    assert set(m.frame["id"]) == set(names)
    assert m.frame.set_index("id").at["ISIC_0000003", "path"] == str(tmp_path / "train" / "ISIC_0000003.jpg")
    balanced = build_manifest(_cfg(tmp_path, csv, balance=True))
    assert balanced.class_counts() == {"benign": 10, "melanoma": 10}
    assert balanced.class_counts("train") == {"benign": 8, "melanoma": 8}


def test_bad_target_names_file_and_line(tmp_path, write_image):
    csv, _ = _fixture(tmp_path, write_image, [0, 1, 2, 0])
    with pytest.raises(DataError, match=rf"{csv} line 4 \(data row 3\): target='2'; expected 0 \(benign\) or 1"):
        build_manifest(_cfg(tmp_path, csv))


def test_missing_image_names_file_and_line(tmp_path, write_image):
    csv, _ = _fixture(tmp_path, write_image, [0, 1, 0], missing=("ISIC_0000001",))
    with pytest.raises(DataError, match=rf"{csv} line 3 \(data row 2\): image file .*ISIC_0000001.jpg does not exist"):
        build_manifest(_cfg(tmp_path, csv))


def test_patient_groups_and_metadata(tmp_path, write_image):
    names = [f"ISIC_{i:07d}" for i in range(24)]
    for i, name in enumerate(names):
        write_image(tmp_path / "train" / f"{name}.jpg", size=(16, 16), fmt="JPEG", seed=i)
    csv = tmp_path / "gt.csv"
    pd.DataFrame({"image_name": names, "patient_id": [f"IP_{i // 4}" for i in range(24)],
                  "lesion_id": [f"L{i // 2}" for i in range(24)], "sex": ["male", "female", ""] * 8,
                  "age_approx": ["35.0", "45.0", "85.0", ""] * 6,
                  "anatom_site_general_challenge": ["torso"] * 24, "target": [0, 1] * 12}).to_csv(csv, index=False)
    m = build_manifest(_cfg(tmp_path, csv))
    assert m.grouping == "patient_id (column of gt.csv)" and m.frame["group"].nunique() == 6
    assert (m.frame.groupby("group")["split"].nunique() == 1).all()
    meta = m.frame.set_index("id")["metadata"].map(json.loads)
    assert meta["ISIC_0000000"] == {"sex": "male", "age_band": "<40", "site": "torso"}
    assert meta["ISIC_0000002"] == {"age_band": "80+", "site": "torso"}  # blank sex left out
    assert meta["ISIC_0000003"] == {"sex": "male", "site": "torso"}  # blank age left out
    lesions = build_manifest(DataConfig(source="isic_challenge", params={
        "csv": str(csv), "image_dir": str(tmp_path / "train"), "group_column": "lesion_id",
        "metadata_columns": ["sex"]}))
    assert lesions.grouping == "lesion_id (column of gt.csv)" and lesions.frame["group"].nunique() == 12
    assert lesions.metadata_columns() == {"sex": {"female": 8, "male": 8}}
