"""NIH ChestX-ray14 layout: a small fake copy (Data_Entry_2017.csv, images_00k/images/*.png, the official lists)."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest

from meddiff.config import DataConfig
from meddiff.data import build_manifest
from meddiff.errors import ConfigError, DataError

# per patient: (finding labels of image 0, of image 1); patients 0-5 are test patients in test_list.txt
PATTERNS = ["Effusion", "No Finding", "Effusion|Atelectasis", "Mass", "No Finding", "Effusion"]


def make_nih(tmp_path, write_image, n_patients=24, ages=None):
    root = tmp_path / "nih"
    rows, test, train_val = [], [], []
    for p in range(n_patients):
        for k in range(2):
            name = f"{p:08d}_{k:03d}.png"
            labels = PATTERNS[(p + k) % len(PATTERNS)]
            folder = "images_001" if p % 2 else "images_002"
            write_image(root / folder / "images" / name, mode="L", seed=p * 2 + k)
            age = ages[p] if ages else str(20 + 3 * p)
            rows.append({"Image Index": name, "Finding Labels": labels, "Follow-up #": k, "Patient ID": str(p + 1),
                         "Patient Age": age, "Patient Gender": "MF"[p % 2], "View Position": ["PA", "AP"][k]})
            (test if p < 6 else train_val).append(name)
    pd.DataFrame(rows).to_csv(root / "Data_Entry_2017.csv", index=False)
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
    return root


def build(root, **params):
    return build_manifest(DataConfig(source="nih_cxr14", params={"root": str(root), "finding": "Effusion", **params}))


def test_labels_groups_metadata_and_official_split(tmp_path, write_image, caplog):
    root = make_nih(tmp_path, write_image)
    with caplog.at_level(logging.INFO):
        m = build(root)
    assert m.class_names == ("no_finding", "effusion")
    frame = m.frame.set_index("id")
    # 48 images: patterns cycle over (p + k) % 6; "Mass" rows are dropped as other findings
    source = pd.read_csv(root / "Data_Entry_2017.csv")
    expected = {r["Image Index"][:-4]: int("Effusion" in r["Finding Labels"]) for _, r in source.iterrows()
                if r["Finding Labels"] != "Mass"}
    assert dict(frame["label"]) == expected
    assert "'other findings but not the finding (other_findings: exclude)': 8" in caplog.text
    assert set(frame.loc[[i for i in frame.index if int(i[:8]) < 6], "split"]) == {"test"}
    assert set(frame.loc[[i for i in frame.index if int(i[:8]) >= 6], "split"]) == {"train", "val"}
    assert (m.frame.groupby("group")["split"].nunique() == 1).all()  # no patient in two splits
    assert json.loads(frame.at["00000000_000", "metadata"]) == {"age": "20", "age_band": "<40", "sex": "M",
                                                                  "view": "PA"}
    assert frame.at["00000001_001", "path"].endswith("images_001/images/00000001_001.png")


def test_views_other_findings_negative_and_own_split(tmp_path, write_image):
    root = make_nih(tmp_path, write_image)
    m = build(root, views=["PA"], other_findings="negative", official_split=False)
    assert set(json.loads(t)["view"] for t in m.frame["metadata"]) == {"PA"}
    assert len(m) == 24 and set(m.frame["split"]) == {"train", "val", "test"}
    assert (m.frame.groupby("group")["split"].nunique() == 1).all()


def test_old_ages_are_grouped_and_missing_images_skipped(tmp_path, write_image, caplog):
    root = make_nih(tmp_path, write_image, ages=["95"] * 24)
    (root / "images_002" / "images" / "00000000_000.png").unlink()
    with pytest.raises(DataError, match=r"Data_Entry_2017.csv line 2 \(data row 1\): image '00000000_000.png' not "
                                        r"found under"):
        build(root)
    with caplog.at_level(logging.INFO):
        m = build(root, missing_images="skip")
    assert "1 labelled image(s) not found on disk" in caplog.text
    assert {json.loads(t)["age"] for t in m.frame["metadata"]} == {"90+"}


def test_unknown_finding(tmp_path, write_image):
    root = make_nih(tmp_path, write_image, n_patients=6)
    with pytest.raises(ConfigError, match=r"'Efusion' is not a finding name in .*names seen .*'effusion'"):
        build(root, finding="Efusion")
