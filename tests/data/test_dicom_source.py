"""The ``dicom`` source: a folder of DICOM files (with and without suffix) labelled by a CSV, hashed patient groups,
de-identified metadata, and no identifier anywhere in the manifest or the log."""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import pandas as pd
import pytest

from meddiff.config import DataConfig
from meddiff.data import build_manifest
from meddiff.data.dicom_header import patient_group, read_header
from meddiff.errors import DataError
from tests.dicom_files import write_dicom

# Distinctive identifiers: none of them may appear in any output.
IDENTIFIERS = {
    "patient_name": "Qwertyson^Xanthippe", "birth_date": "19311231", "accession": "ACCZZ99887",
    "institution": "Hospital Zyxwvut",
}
PATIENTS = ["ZZPID-ALPHA-4242", "ZZPID-BRAVO-7373", "ZZPID-CHARLIE-5151", "ZZPID-DELTA-6161"]


def pixels(seed):
    return np.random.default_rng(seed).integers(0, 4096, (8, 8)).astype(np.uint16)


def make_folder(tmp_path, n_per_patient=3, **overrides):
    """root with 12 files: patient k's images in root/series<k>/; every other file has no suffix. Returns
    (root, rows) where rows are (relative path, sop uid, patient, label)."""
    root = tmp_path / "dicoms"
    rows = []
    for k, patient in enumerate(PATIENTS):
        for j in range(n_per_patient):
            i = k * n_per_patient + j
            rel = f"series{k}/img{j}.dcm" if i % 2 == 0 else f"series{k}/IM{j:04d}"
            uid = f"1.2.826.0.1.3680043.8.498.{100 + i}"
            kwargs = dict(patient_id=patient, sop_instance_uid=uid, sex="MF"[k % 2],
                          age=["045Y", "006M", "095Y", "070Y"][k], view=["PA", "AP"][j % 2],
                          study_date="20200315", **IDENTIFIERS)
            kwargs.update(overrides)
            write_dicom(root / rel, pixels(i), **kwargs)
            rows.append((rel, uid, patient, i % 2))
    (root / "README.txt").write_text("not a dicom file\n")
    return root, rows


def labels_csv(tmp_path, rows, key="path"):
    csv = tmp_path / "labels.csv"
    column = "path" if key == "path" else "sop_instance_uid"
    pd.DataFrame({column: [r[0] if key == "path" else r[1] for r in rows], "y": [r[3] for r in rows]}).to_csv(
        csv, index=False)
    return csv


def build(root, csv, **params):
    return build_manifest(DataConfig(source="dicom", params={"root": str(root), "labels_csv": str(csv),
                                                            "label_column": "y", "label_names": {0: "neg", 1: "pos"},
                                                            **params}))


def test_path_key_files_without_suffix_groups_and_metadata(tmp_path, caplog):
    root, rows = make_folder(tmp_path)
    with caplog.at_level(logging.INFO):
        m = build(root, labels_csv(tmp_path, rows))
    assert len(m) == 12 and m.class_counts() == {"neg": 6, "pos": 6}
    frame = m.frame.set_index("id")
    assert "series0/img0" in frame.index and "series0/IM0001" in frame.index  # suffix stripped / kept
    # the same PatientID gives one group, different ones different groups, and the group is the salted hash
    for k, patient in enumerate(PATIENTS):
        groups = set(frame.loc[[i for i in frame.index if i.startswith(f"series{k}/")], "group"])
        expected = "p-" + hashlib.sha256(b"meddiff-patient-v1:" + patient.encode()).hexdigest()[:16]
        assert groups == {expected}
    assert frame["group"].nunique() == 4
    assert m.grouping.startswith("patient")
    # no patient in two splits
    assert (m.frame.groupby("group")["split"].nunique() == 1).all()
    meta = m.frame.set_index("id")["metadata"].map(json.loads)
    assert meta["series0/img0"] == {"sex": "M", "age": "45", "age_band": "40-59", "view": "PA",
                                     "manufacturer": "ACME Imaging", "body_part": "CHEST", "modality": "DX",
                                     "study_date": "2020", "sop_instance_uid": "1.2.826.0.1.3680043.8.498.100"}
    assert meta["series1/IM0000"]["age"] == "0" and meta["series1/IM0000"]["age_band"] == "<40"  # 006M
    assert meta["series2/img0"]["age"] == "90+"  # 095Y: ages above 89 are grouped
    assert "ignored 1 file(s) that are not DICOM" in caplog.text


def test_sop_instance_uid_key_and_ids(tmp_path):
    root, rows = make_folder(tmp_path)
    csv = labels_csv(tmp_path, rows, key="sop_instance_uid")
    m = build(root, csv, key="sop_instance_uid", id_from="sop_instance_uid", date_precision="day")
    assert set(m.frame["id"]) == {r[1] for r in rows}
    by_id = dict(zip(m.frame["id"], m.frame["label"]))
    assert all(by_id[uid] == y for _, uid, _, y in rows)
    assert json.loads(m.frame["metadata"][0])["study_date"] == "2020-03-15"


def test_no_identifier_reaches_manifest_or_log(tmp_path, caplog):
    root, rows = make_folder(tmp_path)
    csv = labels_csv(tmp_path, rows)
    with caplog.at_level(logging.DEBUG):
        m = build(root, csv, date_precision="month")
        with pytest.raises(DataError) as error:  # an error message about these files carries none either
            build(root, csv, key_column="nope")
    text = "\n".join([m.frame.to_csv(), str(m.data_checks()), caplog.text, str(error.value)])
    for value in [*IDENTIFIERS.values(), *PATIENTS, "Qwertyson", "Xanthippe", "1931", "ZZPID"]:
        assert value not in text, value
    assert "2020-03" in text  # month precision is what was asked


def test_missing_patient_id_is_its_own_group_and_counted(tmp_path, caplog):
    root, rows = make_folder(tmp_path, patient_id=None)
    with caplog.at_level(logging.INFO):
        m = build(root, labels_csv(tmp_path, rows))
    assert m.frame["group"].nunique() == 12
    assert "12 file(s) have no PatientID; each is its own group" in caplog.text


def test_unlabelled_excluded_and_skipped_files(tmp_path, caplog):
    root, rows = make_folder(tmp_path)
    csv = labels_csv(tmp_path, rows[:10])
    with pytest.raises(DataError, match=r"2 DICOM file\(s\) have no row in .*labels.csv, e.g. \['series3/IM0002', "
                                        r"'series3/img1.dcm'\]"):
        build(root, csv)
    (root / "broken.dcm").write_bytes(b"\x00" * 50)
    with caplog.at_level(logging.INFO):
        m = build(root, csv, unlabelled_files="ignore", unreadable_files="skip", exclude_labels=[1],
                  label_names={0: "neg"})
    assert len(m) == 5 and set(m.frame["label"]) == {0}
    assert "ignored 2 DICOM file(s) without a row" in caplog.text
    assert "skipped 1 file(s) whose DICOM header cannot be read" in caplog.text
    assert "dropped 5 row(s) with exclude_labels ['1']" in caplog.text


def test_groups_none_and_header_reader(tmp_path):
    root, rows = make_folder(tmp_path)
    m = build(root, labels_csv(tmp_path, rows), groups="none")
    assert not m.has_groups and (m.frame["group"] == m.frame["id"]).all()
    header = read_header(root / rows[1][0])
    assert header.group == patient_group(PATIENTS[0]) and header.sop_instance_uid == rows[1][1]


def test_invalid_values_are_not_quoted_by_pydicom_or_us(tmp_path, caplog, recwarn):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = write_dicom(tmp_path / "old.dcm", pixels(0), age="097 yrs", patient_id="ZZPID-ECHO-1")
    recwarn.clear()
    caplog.clear()
    with caplog.at_level(logging.DEBUG), pytest.raises(DataError, match="malformed PatientAge") as error:
        read_header(path)
    text = caplog.text + str(error.value) + " ".join(str(w.message) for w in recwarn)
    assert "097" not in text and "ZZPID" not in text


def test_official_split_column(tmp_path):
    root, rows = make_folder(tmp_path)
    csv = labels_csv(tmp_path, rows)
    table = pd.read_csv(csv)
    table["part"] = ["tr", "tr", "tr", "tr", "tr", "tr", "va", "va", "va", "te", "te", "te"]
    table.to_csv(csv, index=False)
    m = build(root, csv, split_column="part", split_values={"tr": "train", "va": "val", "te": "test"})
    assert dict(zip(m.frame["id"], m.frame["split"]))["series3/img1"] == "test"
    assert m.frame["split"].value_counts().to_dict() == {"train": 6, "val": 3, "test": 3}
