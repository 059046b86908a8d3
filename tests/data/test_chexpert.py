"""CheXpert source on a tiny fixture tree with the edge rows the label rule must handle."""

from __future__ import annotations

import pandas as pd
import pytest

from meddiff.config import DataConfig
from meddiff.data import build_manifest
from meddiff.errors import DataError

COLUMNS = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Pleural Effusion"]


def _row(path, view="Frontal", no_finding="", effusion=""):
    return [path, "Female", 60, view, "AP" if view == "Frontal" else "", no_finding, effusion]


def _tree(tmp_path, write_image, extra_train=(), extra_valid=()):
    """train.csv: 12 no_finding, 6 pleural_effusion, plus edge rows; valid.csv: 1 + 1, paths relative to root."""
    root = tmp_path / "CheXpert-v1.0-small"
    train = [_row(f"CheXpert-v1.0-small/train/patient{i:05d}/study1/view1_frontal.jpg", no_finding="1.0",
                  effusion="0.0" if i % 2 else "") for i in range(12)]
    train += [_row(f"CheXpert-v1.0-small/train/patient{i:05d}/study1/view1_frontal.jpg", effusion="1.0")
              for i in range(12, 18)]
    train += [
        _row("CheXpert-v1.0-small/train/patient00000/study1/view2_lateral.jpg", "Lateral", "1.0", ""),  # lateral
        _row("CheXpert-v1.0-small/train/patient00100/study1/view1_frontal.jpg", no_finding="1.0", effusion="1.0"),  # both
        _row("CheXpert-v1.0-small/train/patient00101/study1/view1_frontal.jpg", effusion="-1.0"),  # uncertain
        _row("CheXpert-v1.0-small/train/patient00102/study1/view1_frontal.jpg"),  # blanks
        _row("CheXpert-v1.0-small/train/patient00103/study1/view1_frontal.jpg", no_finding="1.0", effusion="-1.0"),
        *extra_train,
    ]
    valid = [_row("valid/patient64541/study1/view1_frontal.jpg", no_finding="1.0"),
             _row("valid/patient64542/study1/view1_frontal.jpg", effusion="1.0"), *extra_valid]
    for i, row in enumerate(train + valid):
        relative = row[0].split("/", 1)[1] if row[0].startswith("CheXpert") else row[0]
        if "missing" not in relative:
            write_image(root / relative, size=(20, 24), mode="L", fmt="JPEG", seed=i)
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(train, columns=COLUMNS).to_csv(root / "train.csv", index=False)
    pd.DataFrame(valid, columns=COLUMNS).to_csv(root / "valid.csv", index=False)
    return root


def _cfg(root, **kw):
    return DataConfig(source="chexpert", params={"root": str(root)}, **kw)


def test_labels_pooling_and_paths(tmp_path, write_image):
    root = _tree(tmp_path, write_image)
    m = build_manifest(_cfg(root))
    labels = dict(zip(m.frame["id"], m.frame["label"]))
    assert m.class_names == ("no_finding", "pleural_effusion")
    # 12 + 1 (uncertain effusion with No Finding = 1) + 1 valid; 6 + 1 valid. Lateral, both, -1-only and blank dropped.
    assert m.class_counts() == {"no_finding": 14, "pleural_effusion": 7}
    assert labels["CheXpert-v1.0-small/train/patient00103/study1/view1_frontal"] == 0
    assert labels["CheXpert-v1.0-small/train/patient00012/study1/view1_frontal"] == 1
    assert labels["valid/patient64542/study1/view1_frontal"] == 1
    for dropped in ("patient00000/study1/view2_lateral", "patient00100", "patient00101", "patient00102"):
        assert not any(dropped in i for i in labels)
    path = m.frame.set_index("id").at["CheXpert-v1.0-small/train/patient00001/study1/view1_frontal", "path"]
    assert path == str(root / "train/patient00001/study1/view1_frontal.jpg")
    assert set(m.frame["split"]) == {"train", "val", "test"}


def test_balanced_and_split(tmp_path, write_image):
    m = build_manifest(_cfg(_tree(tmp_path, write_image), balance=True, split_seed=5))
    assert m.class_counts() == {"no_finding": 7, "pleural_effusion": 7}
    # 7 per class at 80/10/10 -> 5.6/0.7/0.7 -> floors 5/0/0, the two spare rows go to the largest remainders: 5/1/1
    assert m.class_counts("train") == {"no_finding": 5, "pleural_effusion": 5}
    assert m.class_counts("val") == m.class_counts("test") == {"no_finding": 1, "pleural_effusion": 1}
    assert m.fingerprint() == build_manifest(_cfg(tmp_path / "CheXpert-v1.0-small", balance=True, split_seed=5)).fingerprint()


def test_missing_image_names_csv_line(tmp_path, write_image):
    root = _tree(tmp_path, write_image, extra_valid=[_row("valid/patient09999/missing/view1_frontal.jpg", effusion="1.0")])
    with pytest.raises(DataError, match=rf"{root / 'valid.csv'} line 4 \(data row 3\): image file .* does not exist"):
        build_manifest(_cfg(root))


def test_bad_finding_value_names_csv_line(tmp_path, write_image):
    extra = [_row("CheXpert-v1.0-small/train/patient00200/study1/view1_frontal.jpg", effusion="yes")]
    root = _tree(tmp_path, write_image, extra_train=extra)
    with pytest.raises(DataError, match=rf"{root / 'train.csv'} line 25 .*Pleural Effusion='yes'; expected 1, 0, -1"):
        build_manifest(_cfg(root))


def test_missing_column_and_missing_csv(tmp_path, write_image):
    root = _tree(tmp_path, write_image)
    pd.read_csv(root / "valid.csv").drop(columns=["Frontal/Lateral"]).to_csv(root / "valid.csv", index=False)
    with pytest.raises(DataError, match=r"valid.csv: missing column\(s\) \['Frontal/Lateral'\]"):
        build_manifest(_cfg(root))
    (root / "valid.csv").unlink()
    with pytest.raises(DataError, match="valid.csv: CSV file does not exist"):
        build_manifest(_cfg(root))
