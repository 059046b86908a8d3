"""MIMIC-CXR-JPG layout: a small fake copy (metadata / chexpert / split tables, one gzipped, files/pNN/.../*.jpg)."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest

from meddiff.config import DataConfig
from meddiff.data import build_manifest
from meddiff.errors import DataError

FINDINGS = ["Atelectasis", "Cardiomegaly", "No Finding", "Pleural Effusion"]
# per study (subject index + study index) % 5: the chexpert cells of FINDINGS
STUDIES = [("", "", "1.0", ""), ("", "", "", "1.0"), ("1.0", "", "", "1.0"), ("", "1.0", "", ""),
           ("", "", "", "-1.0")]


def make_mimic(tmp_path, write_image, n_subjects=10):
    root = tmp_path / "mimic"
    meta, labels, split, patients = [], [], [], []
    for s in range(n_subjects):
        subject = str(10000000 + s * 1111)
        patients.append({"subject_id": subject, "gender": "FM"[s % 2], "anchor_age": str(50 + 5 * s)})
        for t in range(2):
            study = str(50000000 + s * 10 + t)
            labels.append(dict(zip(["subject_id", "study_id", *FINDINGS], [subject, study, *STUDIES[(s + t) % 5]])))
            for v, view in enumerate(["PA", "LATERAL"]):
                dicom_id = f"d{s:02d}{t}{v}-abc"
                write_image(root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom_id}.jpg",
                            mode="L", fmt="JPEG", seed=s * 4 + t * 2 + v)
                meta.append({"dicom_id": dicom_id, "subject_id": subject, "study_id": study, "ViewPosition": view})
                split.append({"dicom_id": dicom_id, "study_id": study, "subject_id": subject,
                              "split": "train" if s < 6 else ("validate" if s < 8 else "test")})
    pd.DataFrame(meta).to_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", index=False)
    pd.DataFrame(labels).to_csv(root / "mimic-cxr-2.0.0-chexpert.csv", index=False)
    pd.DataFrame(split).to_csv(root / "mimic-cxr-2.0.0-split.csv.gz", index=False)
    pd.DataFrame(patients).to_csv(tmp_path / "patients.csv", index=False)
    return root


def build(root, **params):
    return build_manifest(DataConfig(source="mimic_cxr", params={"root": str(root), "finding": "Pleural Effusion",
                                                                 **params}))


def expected_label(s, t, uncertain="exclude"):
    cells = dict(zip(FINDINGS, STUDIES[(s + t) % 5]))
    if cells["Pleural Effusion"] == "1.0" or (cells["Pleural Effusion"] == "-1.0" and uncertain == "positive"):
        return 1
    if cells["No Finding"] == "1.0":
        return 0
    return None


def test_labels_official_split_groups_and_metadata(tmp_path, write_image, caplog):
    root = make_mimic(tmp_path, write_image)
    with caplog.at_level(logging.INFO):
        m = build(root, views=["PA"], patients_csv=str(tmp_path / "patients.csv"))
    assert m.class_names == ("no_finding", "pleural_effusion")
    expected = {f"d{s:02d}{t}0-abc": expected_label(s, t) for s in range(10) for t in range(2)}
    assert dict(zip(m.frame["id"], m.frame["label"])) == {k: v for k, v in expected.items() if v is not None}
    frame = m.frame.set_index("id")
    for image_id, row in frame.iterrows():
        s = int(image_id[1:3])
        assert row["split"] == ("train" if s < 6 else "val" if s < 8 else "test")
        assert row["group"] == str(10000000 + s * 1111)
    assert (m.frame.groupby("group")["split"].nunique() == 1).all()
    assert json.loads(frame.at["d0000-abc", "metadata"]) == {"age": "50", "age_band": "40-59", "sex": "F",
                                                              "view": "PA"}
    assert "'finding uncertain (uncertain: exclude)': 4" in caplog.text
    assert "'other findings but not the finding (other_findings: exclude)': 4" in caplog.text


def test_uncertain_positive_all_views_and_own_split(tmp_path, write_image):
    root = make_mimic(tmp_path, write_image)
    m = build(root, uncertain="positive", official_split=False)
    expected = {f"d{s:02d}{t}{v}-abc": expected_label(s, t, "positive") for s in range(10) for t in range(2)
                for v in range(2)}
    assert dict(zip(m.frame["id"], m.frame["label"])) == {k: v for k, v in expected.items() if v is not None}
    assert set(m.frame["split"]) == {"train", "val", "test"}
    assert (m.frame.groupby("group")["split"].nunique() == 1).all()


def test_image_without_split_row_and_missing_image(tmp_path, write_image):
    root = make_mimic(tmp_path, write_image)
    split = pd.read_csv(root / "mimic-cxr-2.0.0-split.csv.gz", dtype=str)
    split.iloc[1:].to_csv(root / "mimic-cxr-2.0.0-split.csv.gz", index=False)
    with pytest.raises(DataError, match=r"1 kept image\(s\) have no split row, e.g. \['d0000-abc'\]"):
        build(root)
    next(root.glob("files/*/*/*/d0110-abc.jpg")).unlink()
    m = build(root, official_split=False, missing_images="skip")
    assert "d0110-abc" not in set(m.frame["id"])
