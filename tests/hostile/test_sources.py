"""Hostile inputs for the DICOM folder and chest X-ray sources: each case is one kind of bad input, and each asserts
the error that names the file / row / key and what was expected (or, for the lenient settings, that the build goes on
without the bad file and says how many it left out)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from meddiff.config import DataConfig
from meddiff.data import build_manifest
from meddiff.errors import ConfigError, DataError
from tests.data.test_dicom_source import labels_csv, make_folder
from tests.data.test_mimic_cxr import make_mimic
from tests.data.test_nih_cxr14 import make_nih
from tests.dicom_files import write_dicom

# the malformed header values these tests write make pydicom warn when writing them (reading them does not)
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")


def write_image(path, size=(24, 20), mode="RGB", fmt=None, seed=0):
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path, format=fmt)
    return path


def dicom_cfg(root, csv, **params):
    return DataConfig(source="dicom", params={"root": str(root), "labels_csv": str(csv), "label_column": "y",
                                              "label_names": {0: "neg", 1: "pos"}, **params})


def dicom_case(edit=None, folder=None, **params):
    """A case on the standard 12-file DICOM folder: ``folder(root, rows)`` edits files, ``edit(table)`` the CSV."""
    def make(tmp_path):
        root, rows = make_folder(tmp_path, n_per_patient=2)
        csv = labels_csv(tmp_path, rows)
        if edit:
            table = pd.read_csv(csv, dtype=str)
            edit(table)
            table.to_csv(csv, index=False)
        if folder:
            folder(root, rows)
        return dicom_cfg(root, csv, **params)
    return make


def _set(table, row, column, value):
    table.loc[row, column] = value


def _nih(edit=None, **params):
    def make(tmp_path):
        root = make_nih(tmp_path, write_image, n_patients=8)
        if edit:
            edit(root)
        return DataConfig(source="nih_cxr14", params={"root": str(root), "finding": "Effusion", **params})
    return make


def _nih_csv(column, row, value):
    def edit(root):
        table = pd.read_csv(root / "Data_Entry_2017.csv", dtype=str)
        table.loc[row, column] = value
        table.to_csv(root / "Data_Entry_2017.csv", index=False)
    return edit


def _mimic(edit=None, **params):
    def make(tmp_path):
        root = make_mimic(tmp_path, write_image, n_subjects=6)
        if edit:
            edit(root, tmp_path)
        extra = {"patients_csv": str(tmp_path / "patients.csv")}
        return DataConfig(source="mimic_cxr", params={"root": str(root), "finding": "Pleural Effusion", **extra,
                                                      **params})
    return make


def _mimic_table(name, column, row, value):
    def edit(root, tmp_path):
        path = next(p for p in [root / f"mimic-cxr-2.0.0-{name}.csv", root / f"mimic-cxr-2.0.0-{name}.csv.gz",
                                tmp_path / f"{name}.csv"] if p.is_file())
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        table.loc[row, column] = value
        table.to_csv(path, index=False)
    return edit


def _vindr(tmp_path, **params):
    rows = []
    for i in range(6):
        write_image(tmp_path / "train" / f"v{i}.png", mode="L", seed=i)
        for r in range(3):
            rows.append({"image_id": f"v{i}", "rad_id": f"R{r}", "class_name": ["No finding", "Effusion"][i % 2]})
    csv = tmp_path / "annotations.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    base = {"csv": str(csv), "path_template": "train/{image_id}.png", "id_column": "image_id",
            "finding": "Effusion", "no_finding": "No finding", "findings_column": "class_name",
            "reader_column": "rad_id"}
    return DataConfig(source="image_csv", params={**base, **params})


def _vindr_columns(tmp_path, bad):
    write_image(tmp_path / "train" / "v0.png", mode="L")
    csv = tmp_path / "image_labels.csv"
    csv.write_text(f"image_id,rad_id,Effusion,No finding\nv0,R1,1,0\nv0,R2,{bad},0\n")
    return DataConfig(source="image_csv", params={"csv": str(csv), "path_template": "train/{image_id}.png",
                                                  "id_column": "image_id", "finding": "Effusion",
                                                  "no_finding": "No finding", "finding_columns": ["*"],
                                                  "reader_column": "rad_id"})


def _vindr_blank_reader(tmp_path):
    cfg = _vindr(tmp_path)
    table = pd.read_csv(cfg.params["csv"], dtype=str)
    table.loc[4, "rad_id"] = ""
    table.to_csv(cfg.params["csv"], index=False)
    return cfg


def _unreadable(root, rows):
    (root / "series0" / "img0.dcm").write_bytes(b"this is a text file, not DICOM\n" * 8)


def _random_bytes(root, rows):
    data = np.random.default_rng(5).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    (root / "series0" / "img0.dcm").write_bytes(b"\0" * 128 + b"DICM" + data)


def _truncated(root, rows):
    path = root / "series0" / "img0.dcm"
    path.write_bytes(path.read_bytes()[:150])


def _duplicate_uid(root, rows):
    write_dicom(root / "series0" / "img0.dcm", np.zeros((4, 4), np.uint16), sop_instance_uid=rows[1][1])


def _empty(root, rows):
    for path in root.rglob("*"):
        if path.is_file() and path.name != "README.txt":
            path.unlink()


def _rewrite(**header):
    def folder(root, rows):
        write_dicom(root / rows[0][0], np.zeros((4, 4), np.uint16), sop_instance_uid=rows[0][1], **header)
    return folder


def _nih_both_lists(root):
    with open(root / "train_val_list.txt", "a") as handle:
        handle.write("00000000_000.png\n")


def _nih_unknown_in_list(root):
    with open(root / "test_list.txt", "a") as handle:
        handle.write("99999999_000.png\n")


def _nih_not_in_lists(root):
    names = (root / "test_list.txt").read_text().split()
    (root / "test_list.txt").write_text("\n".join(names[1:]) + "\n")


CASES = [
    ("dicom-missing-label-column", dicom_case(label_column="diagnosis"), DataError,
     r"labels.csv: missing column\(s\) \['diagnosis'\]; the file has \['path', 'y'\]"),
    ("dicom-label-not-in-label-names", dicom_case(edit=lambda t: _set(t, 2, "y", "7")), DataError,
     r"labels.csv line 4 \(data row 3\): unknown label y='7'; expected one of label_names"),
    ("dicom-csv-key-matches-no-file", dicom_case(edit=lambda t: _set(t, 0, "path", "series9/none.dcm")), DataError,
     r"labels.csv line 2 \(data row 1\): path='series9/none.dcm' matches no readable DICOM file"),
    ("dicom-duplicate-csv-key", dicom_case(edit=lambda t: _set(t, 1, "path", t.loc[0, "path"])), DataError,
     r"duplicate path key 'series0/img0.dcm' at .*line 2 .* and at .*line 3"),
    ("dicom-duplicate-sop-instance-uid", dicom_case(folder=_duplicate_uid), DataError,
     r"series0/IM0001 and .*series0/img0.dcm: the same SOPInstanceUID '1.2.826.0.1.3680043.8.498.101'"),
    ("dicom-text-file-named-dcm", dicom_case(folder=_unreadable), DataError,
     r"series0/img0.dcm: unreadable DICOM header .*unreadable_files: skip"),
    ("dicom-random-bytes-after-dicm-preamble", dicom_case(folder=_random_bytes), DataError,
     r"series0/img0.dcm: unreadable DICOM header"),
    ("dicom-truncated-header", dicom_case(folder=_truncated), DataError,
     r"series0/img0.dcm: unreadable DICOM header"),
    ("dicom-folder-without-dicom-files", dicom_case(folder=_empty), DataError,
     r"dicoms: no DICOM files found .*1 other file\(s\) ignored"),
    ("dicom-root-missing", lambda tmp_path: dicom_cfg(tmp_path / "nowhere", labels_csv(tmp_path, [("a", "1", "p", 0)])),
     DataError, r"nowhere: DICOM folder does not exist"),
    ("dicom-malformed-patient-age", dicom_case(folder=_rewrite(age="45 years")), DataError,
     r"series0/img0.dcm: malformed PatientAge \(8 characters\); expected nnnD"),
    ("dicom-malformed-study-date", dicom_case(folder=_rewrite(study_date="2020-3-1")), DataError,
     r"series0/img0.dcm: malformed StudyDate; expected YYYYMMDD"),
    ("dicom-unknown-choice", dicom_case(unlabelled_files="warn"), ConfigError,
     r"data.params.unlabelled_files: expected one of \['error', 'ignore'\], got 'warn'"),
    ("dicom-label-in-label-names-and-excluded", dicom_case(exclude_labels=[1]), ConfigError,
     r"exclude_labels: \['1'\] also appear in label_names"),
    ("nih-missing-columns", _nih(edit=lambda root: pd.read_csv(root / "Data_Entry_2017.csv").drop(
        columns=["Patient ID"]).to_csv(root / "Data_Entry_2017.csv", index=False)), DataError,
     r"Data_Entry_2017.csv: missing column\(s\) \['Patient ID'\]"),
    ("nih-unknown-finding", _nih(finding="Pleural Effusion"), ConfigError,
     r"finding: 'Pleural Effusion' is not a finding name in .*Data_Entry_2017.csv; names seen .*'effusion'"),
    ("nih-split-list-names-unknown-image", _nih(edit=_nih_unknown_in_list), DataError,
     r"test_list.txt line 13: '99999999_000.png' is not an Image Index"),
    ("nih-image-in-both-lists", _nih(edit=_nih_both_lists), DataError,
     r"'00000000_000.png' is in both train_val_list.txt and test_list.txt"),
    ("nih-image-in-neither-list", _nih(edit=_nih_not_in_lists), DataError,
     r"1 image\(s\) are in neither train_val_list.txt nor test_list.txt, e.g. \['00000000_000.png'\]"),
    ("nih-malformed-age", _nih(edit=_nih_csv("Patient Age", 0, "forty")), DataError,
     r"Data_Entry_2017.csv line 2 \(data row 1\): malformed age 'forty'"),
    ("nih-no-image-folder", _nih(image_dirs=["pngs*"]), DataError, r"no image folder matches image_dirs \['pngs\*'\]"),
    ("nih-duplicate-image-index", _nih(edit=_nih_csv("Image Index", 1, "00000000_000.png")), DataError,
     r"duplicate Image Index '00000000_000.png'"),
    ("mimic-bad-chexpert-cell", _mimic(edit=_mimic_table("chexpert", "Atelectasis", 2, "2.0")), DataError,
     r"mimic-cxr-2.0.0-chexpert.csv line 4 \(data row 3\): Atelectasis='2.0'; expected 1, 0, -1 or blank"),
    ("mimic-unknown-split-value", _mimic(edit=_mimic_table("split", "split", 0, "valid")), DataError,
     r"mimic-cxr-2.0.0-split.csv.gz line 2 \(data row 1\): split='valid'; expected one of \['train', 'validate'"),
    ("mimic-missing-metadata-table", _mimic(edit=lambda root, _: (root / "mimic-cxr-2.0.0-metadata.csv.gz").unlink()),
     DataError, r"neither mimic-cxr-2.0.0-metadata.csv nor mimic-cxr-2.0.0-metadata.csv.gz exists"),
    ("mimic-malformed-anchor-age", _mimic(edit=_mimic_table("patients", "anchor_age", 1, "n/a")), DataError,
     r"patients.csv line 3 \(data row 2\): malformed anchor_age 'n/a'"),
    ("mimic-unknown-uncertain-policy", _mimic(uncertain="ignore"), ConfigError,
     r"data.params.uncertain: expected one of \['exclude', 'positive', 'negative'\], got 'ignore'"),
    ("image-csv-template-names-missing-column", lambda t: _vindr(t, path_template="{ImageDir}/{image_id}.png"),
     DataError, r"annotations.csv: missing column\(s\) \['ImageDir'\]"),
    ("image-csv-finding-without-findings-column", lambda t: _vindr(t, findings_column=None), ConfigError,
     r"with finding, set exactly one of findings_column .* and finding_columns"),
    ("image-csv-bad-finding-cell", lambda t: _vindr_columns(t, "yes"), DataError,
     r"image_labels.csv line 3 \(data row 2\): Effusion='yes'; expected 1, 0, -1 or blank"),
    ("image-csv-blank-reader", _vindr_blank_reader, DataError,
     r"annotations.csv line 6 \(data row 5\): column 'rad_id' is blank"),
    ("image-csv-unknown-no-finding-name", lambda t: _vindr(t, no_finding="normal"), ConfigError,
     r"no_finding: 'normal' is not a finding name in .*annotations.csv column 'class_name'"),
]


@pytest.mark.parametrize("make, error, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_source_input(tmp_path, make, error, message):
    cfg = make(tmp_path)
    with pytest.raises(error, match=message):
        build_manifest(cfg)


@pytest.mark.parametrize("folder, params, log", [
    (_unreadable, {"unreadable_files": "skip"}, "skipped 1 file(s) whose DICOM header cannot be read"),
    (_truncated, {"unreadable_files": "skip"}, "skipped 1 file(s) whose DICOM header cannot be read"),
], ids=["text-file-named-dcm-skipped", "truncated-header-skipped"])
def test_lenient_settings_go_on_without_the_bad_file(tmp_path, caplog, folder, params, log):
    root, rows = make_folder(tmp_path, n_per_patient=2)
    folder(root, rows)
    csv = labels_csv(tmp_path, rows[1:])
    with caplog.at_level(logging.INFO):
        m = build_manifest(dicom_cfg(root, csv, **params))
    assert len(m) == 7 and "series0/img0" not in set(m.frame["id"])
    assert log in caplog.text


def test_dicom_file_symlinked_out_of_the_root_is_refused(tmp_path):
    import numpy as np
    import pandas as pd

    from meddiff.config import DataConfig
    from meddiff.data.sources import build_manifest
    from meddiff.errors import DataError
    from tests.dicom_files import write_dicom

    root = tmp_path / "root"
    for i in range(4):
        write_dicom(root / f"a{i}.dcm", np.full((8, 8), 10 * i, np.uint8), patient_id=f"P{i}")
    write_dicom(tmp_path / "elsewhere" / "secret.dcm", np.zeros((8, 8), np.uint8))
    (root / "link.dcm").symlink_to(tmp_path / "elsewhere" / "secret.dcm")
    pd.DataFrame({"path": [f"a{i}.dcm" for i in range(4)] + ["link.dcm"], "y": [0, 1, 0, 1, 0]}).to_csv(
        tmp_path / "labels.csv", index=False)
    params = {"root": str(root), "labels_csv": str(tmp_path / "labels.csv"), "label_column": "y",
              "label_names": {0: "neg", 1: "pos"}}
    with pytest.raises(DataError, match=r"link.*outside|outside.*root"):
        build_manifest(DataConfig(source="dicom", params=params, leakage_check="off"))
