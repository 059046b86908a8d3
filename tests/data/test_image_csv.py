"""Image folder + CSV source: the real ISIC 180 px folder and small fixtures for every bad input."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from meddiff.config import DataConfig
from meddiff.data import build_manifest
from meddiff.errors import ConfigError, DataError

ISIC_PARAMS = {
    "label_column": "mel_vs_benign",
    "label_names": {0: "benign", 1: "melanoma"},
    "exclude_labels": [-1],
    "where": {"cross_class_duplicate": 0},
    "dedupe_column": "md5",
}


def test_isic_melanoma_vs_benign_counts_and_split(shared_data):
    csv = shared_data("isic_skin_180/labels.csv")
    m = build_manifest(DataConfig(source="image_csv", params={"csv": str(csv), **ISIC_PARAMS}))
    # labels.csv: 1405 rows with cross_class_duplicate=0 and mel_vs_benign in {0, 1} (1029 benign, 376 melanoma);
    # md5 dedupe drops 2 within-class duplicates -> 1028 benign + 375 melanoma = 1403 unique images.
    assert len(m) == 1403
    assert m.class_counts() == {"benign": 1028, "melanoma": 375}
    assert m.class_counts("train") == {"benign": 822, "melanoma": 300}
    assert m.class_counts("val") == {"benign": 103, "melanoma": 38}
    assert m.class_counts("test") == {"benign": 103, "melanoma": 37}
    table = pd.read_csv(csv)
    md5 = dict(zip(str(csv.parent.resolve()) + "/" + table["path"], table["md5"]))
    per_split = {s: {md5[p] for p in m.select(s).frame["path"]} for s in ("train", "val", "test")}
    assert not (per_split["train"] & per_split["val"] or per_split["train"] & per_split["test"]
                or per_split["val"] & per_split["test"])
    # Two within-class duplicate pairs (same md5): exactly one file of each pair is kept.
    ids = set(m.frame["id"])
    assert len(ids & {"Train/melanoma/ISIC_0000279", "Train/melanoma/ISIC_0000280"}) == 1
    assert len(ids & {"Train/nevus/ISIC_0000477", "Train/nevus/ISIC_0000512"}) == 1
    again = build_manifest(DataConfig(source="image_csv", params={"csv": str(csv), **ISIC_PARAMS}))
    assert again.fingerprint() == m.fingerprint()


def test_isic_balanced(shared_data):
    csv = shared_data("isic_skin_180/labels.csv")
    m = build_manifest(DataConfig(source="image_csv", balance=True, params={"csv": str(csv), **ISIC_PARAMS}))
    assert m.class_counts("train") == {"benign": 300, "melanoma": 300}
    assert m.class_counts("val") == {"benign": 38, "melanoma": 38}
    assert m.class_counts("test") == {"benign": 37, "melanoma": 37}


def _fixture(tmp_path, write_image, rows, columns=("path", "y")):
    for i, row in enumerate(rows):
        if not row[0].startswith("missing"):
            write_image(tmp_path / "imgs" / row[0], seed=i)
    csv = tmp_path / "labels.csv"
    pd.DataFrame(rows, columns=list(columns)).to_csv(csv, index=False)
    return csv


def _build(csv, **params):
    base = {"csv": str(csv), "label_column": "y", "label_names": {0: "neg", 1: "pos"},
            "image_root": str(csv.parent / "imgs")}
    return build_manifest(DataConfig(source="image_csv", params={**base, **params}))


def test_filters_ids_and_paths(tmp_path, write_image):
    rows = [(f"a/{i}.png", i % 2, 0, f"h{i}") for i in range(10)] + [("b/x.png", -1, 0, "hx"), ("b/y.png", 1, 1, "hy")]
    csv = _fixture(tmp_path, write_image, rows, ("path", "y", "dup", "md5"))
    m = _build(csv, exclude_labels=[-1], where={"dup": 0})
    assert len(m) == 10 and m.class_counts() == {"neg": 5, "pos": 5}
    assert set(m.frame["id"]) == {f"a/{i}" for i in range(10)}
    assert m.frame["path"].iloc[0] == str(tmp_path / "imgs" / "a" / "0.png")


def test_unknown_label_names_csv_and_line(tmp_path, write_image):
    csv = _fixture(tmp_path, write_image, [("a.png", 0), ("b.png", 1), ("c.png", 2)])
    with pytest.raises(DataError, match=rf"{csv} line 4 \(data row 3\): unknown label y='2'"):
        _build(csv)


def test_missing_image_names_file_and_row(tmp_path, write_image):
    csv = _fixture(tmp_path, write_image, [("a.png", 0), ("missing.png", 1)])
    with pytest.raises(DataError, match=rf"{csv} line 3 \(data row 2\): image file .*missing.png does not exist"):
        _build(csv)


def test_duplicate_id_names_both_lines(tmp_path, write_image):
    csv = _fixture(tmp_path, write_image, [("a.png", 0, "same"), ("b.png", 1, "other"), ("c.png", 1, "same")],
                   ("path", "y", "name"))
    with pytest.raises(DataError, match=rf"duplicate id 'same' at {csv} line 2 .* and at {csv} line 4"):
        _build(csv, id_column="name")


def test_dedupe_keeps_first_and_logs(tmp_path, write_image, caplog):
    csv = _fixture(tmp_path, write_image, [("a.png", 0, "h1"), ("b.png", 1, "h2"), ("c.png", 0, "h1")],
                   ("path", "y", "md5"))
    with caplog.at_level(logging.INFO, logger="meddiff.data.sources.image_csv"):
        m = _build(csv, dedupe_column="md5")
    assert set(m.frame["id"]) == {"a", "b"}
    assert "dropped 1 row(s)" in caplog.text


def test_dedupe_with_conflicting_labels_is_an_error(tmp_path, write_image):
    csv = _fixture(tmp_path, write_image, [("a.png", 0, "h1"), ("b.png", 1, "h1")], ("path", "y", "md5"))
    with pytest.raises(DataError, match=rf"{csv} line 2 .* and {csv} line 3 .*identical content"):
        _build(csv, dedupe_column="md5")


def test_split_column_with_values(tmp_path, write_image):
    rows = [(f"{i}.png", i % 2, ["Train", "Val", "Test"][i % 3]) for i in range(9)]
    csv = _fixture(tmp_path, write_image, rows, ("path", "y", "part"))
    m = _build(csv, split_column="part", split_values={"Train": "train", "Val": "val", "Test": "test"})
    assert {s: len(m.select(s)) for s in ("train", "val", "test")} == {"train": 3, "val": 3, "test": 3}
    with pytest.raises(DataError, match=rf"{csv} line 3 \(data row 2\): unknown split part='Val'"):
        _build(csv, split_column="part", split_values={"Train": "train", "Test": "test"})


def test_where_matching_nothing_and_missing_column(tmp_path, write_image):
    csv = _fixture(tmp_path, write_image, [("a.png", 0), ("b.png", 1)])
    with pytest.raises(DataError, match=r"missing column\(s\) \['dup'\]"):
        _build(csv, where={"dup": 0})
    with pytest.raises(DataError, match=r"where \{y: 5\} matches no row"):
        _build(csv, where={"y": 5})


def test_label_both_named_and_excluded_is_config_error(tmp_path, write_image):
    csv = _fixture(tmp_path, write_image, [("a.png", 0), ("b.png", 1)])
    with pytest.raises(ConfigError, match="exclude_labels"):
        _build(csv, exclude_labels=[1])


def test_label_names_must_be_a_mapping(tmp_path, write_image):
    csv = _fixture(tmp_path, write_image, [("a.png", 0), ("b.png", 1)])
    with pytest.raises(ConfigError, match="label_names: expected a mapping"):
        _build(csv, label_names=["neg", "pos"])


def test_class_order_survives_config_json_round_trip(tmp_path, write_image):
    import json

    from meddiff.config import ExperimentConfig, config_from_json, save_config

    csv = _fixture(tmp_path, write_image, [(f"{i}.png", i % 2) for i in range(10)])
    params = {"csv": str(csv), "label_column": "y", "label_names": {1: "pos", 0: "neg"}, "image_root": str(tmp_path / "imgs")}
    cfg = ExperimentConfig(data=DataConfig(source="image_csv", params=params))
    save_config(cfg, tmp_path / "config.json")
    again = config_from_json(json.loads((tmp_path / "config.json").read_text()))
    assert build_manifest(again.data).fingerprint() == build_manifest(cfg.data).fingerprint()


def test_symlinked_image_root_and_semicolon_csv_build(tmp_path, write_image):
    # the image root itself may be a symlink (a mounted data folder): paths are checked against its resolved target
    for i, name in enumerate(("a.png", "b.png", "c.png", "d.png")):
        write_image(tmp_path / "store" / name, seed=i)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "imgs").symlink_to(tmp_path / "store", target_is_directory=True)
    csv = tmp_path / "data" / "labels.csv"
    csv.write_bytes("\ufeffpath;y\r\na.png;0\r\n\r\nb.png;1\r\nc.png;0\r\nd.png;1\r\n".encode())
    m = _build(csv)
    assert m.class_counts() == {"neg": 2, "pos": 2}
    assert set(m.frame["path"]) == {str((tmp_path / "store" / n).resolve()) for n in ("a.png", "b.png", "c.png", "d.png")}
# --- finding vs no finding: PadChest and VinDr-CXR style CSVs ----------------------------------------------------------

PADCHEST_LABELS = ["['normal']", "['pneumonia', ' pleural effusion']", "['pleural effusion']", "['cardiomegaly']",
                   "['normal']", "['']"]


def _padchest(tmp_path, write_image, n=24):
    rows = []
    for i in range(n):
        image = f"img{i:03d}.png"
        folder = str(i % 3)
        write_image(tmp_path / "padchest" / folder / image, mode="L", seed=i)
        rows.append({"ImageID": image, "ImageDir": folder, "PatientID": f"pat{i // 2}", "Projection": "PA",
                     "PatientSex_DICOM": "MF"[i % 2], "Labels": PADCHEST_LABELS[i % len(PADCHEST_LABELS)]})
    csv = tmp_path / "padchest" / "PADCHEST_chest_x_ray_images_labels_160K.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def test_padchest_finding_vs_normal_with_path_template_and_groups(tmp_path, write_image, caplog):
    import json
    import logging

    csv = _padchest(tmp_path, write_image)
    params = {"csv": str(csv), "path_template": "{ImageDir}/{ImageID}", "id_column": "ImageID",
              "finding": "pleural effusion", "no_finding": "normal", "findings_column": "Labels",
              "findings_separators": [","], "group_column": "PatientID", "metadata_columns": ["PatientSex_DICOM"]}
    with caplog.at_level(logging.INFO):
        m = build_manifest(DataConfig(source="image_csv", params=params))
    assert m.class_names == ("no_finding", "pleural_effusion")
    expected = {f"img{i:03d}.png": {0: 0, 1: 1, 2: 1, 4: 0}[i % 6] for i in range(24) if i % 6 in (0, 1, 2, 4)}
    assert dict(zip(m.frame["id"], m.frame["label"])) == expected
    assert m.frame.set_index("id").at["img001.png", "path"].endswith("padchest/1/img001.png")
    assert (m.frame.groupby("group")["split"].nunique() == 1).all()
    assert json.loads(m.frame["metadata"][0]).keys() == {"PatientSex_DICOM"}
    assert "'other findings but not the finding (other_findings: exclude)': 4" in caplog.text
    assert "'no label (nothing positive)': 4" in caplog.text
    with pytest.raises(ConfigError, match=r"'effusion' is not a finding name .*'pleural effusion'"):
        build_manifest(DataConfig(source="image_csv", params={**params, "finding": "effusion"}))


def _vindr(tmp_path, write_image):
    """VinDr-CXR annotations style: one row per (image, reader, box); three readers per image."""
    votes = {  # image -> the three readers' finding lists
        "a1": [["Pleural effusion"], ["Pleural effusion", "Cardiomegaly"], ["No finding"]],
        "a2": [["Pleural effusion"], ["No finding"], ["No finding"]],
        "a3": [["No finding"], ["No finding"], ["No finding"]],
        "a4": [["Cardiomegaly"], ["Cardiomegaly"], ["No finding"]],
    }
    rows = []
    for image, readers in votes.items():
        write_image(tmp_path / "vindr" / "train" / f"{image}.png", mode="L", seed=len(rows))
        for r, names in enumerate(readers):
            for name in names:
                rows.append({"image_id": image, "rad_id": f"R{r + 8}", "class_name": name, "x_min": 1})
    csv = tmp_path / "vindr" / "annotations_train.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


@pytest.mark.parametrize("readers, expected", [
    ("majority", {"a1": 1, "a2": 0, "a3": 0}),  # a4: cardiomegaly by 2 of 3 -> other findings, dropped
    ("any", {"a1": 1, "a2": 1, "a3": 0}),       # a4: cardiomegaly by any -> dropped
])
def test_vindr_readers_aggregated_per_image(tmp_path, write_image, readers, expected):
    csv = _vindr(tmp_path, write_image)
    params = {"csv": str(csv), "path_template": "train/{image_id}.png", "id_column": "image_id",
              "finding": "Pleural effusion", "no_finding": "No finding", "findings_column": "class_name",
              "reader_column": "rad_id", "readers": readers}
    m = build_manifest(DataConfig(source="image_csv", split_fractions=(0.34, 0.33, 0.33), params=params))
    assert dict(zip(m.frame["id"], m.frame["label"])) == expected


def test_finding_mode_and_label_mode_do_not_mix(tmp_path, write_image):
    csv = _vindr(tmp_path, write_image)
    with pytest.raises(ConfigError, match="finding .* replaces label_column"):
        build_manifest(DataConfig(source="image_csv", params={"csv": str(csv), "finding": "Pleural effusion",
                                                              "findings_column": "class_name", "label_column": "x"}))
    with pytest.raises(ConfigError, match="label_column: required"):
        build_manifest(DataConfig(source="image_csv", params={"csv": str(csv)}))


def test_vindr_image_labels_one_column_per_finding(tmp_path, write_image):
    """VinDr-CXR image_labels style: one row per (image, reader), one 0/1 column per finding; CheXpert-style -1 too."""
    rows = {"b1": [(1, 0, 0), (1, 0, 0), (0, 0, 1)], "b2": [(0, 0, 1), (0, 0, 1), (1, 0, 0)],
            "b3": [(0, 1, 0), (0, 1, 0), (0, 0, 1)], "b4": [(-1, 0, 0), (0, 0, 1), (-1, 0, 0)]}
    lines = ["image_id,rad_id,Pleural effusion,Cardiomegaly,No finding"]
    for k, (image, readers) in enumerate(rows.items()):
        write_image(tmp_path / "train" / f"{image}.png", mode="L", seed=k)
        lines += [f"{image},R{r},{a},{b},{c}" for r, (a, b, c) in enumerate(readers)]
    (tmp_path / "image_labels_train.csv").write_text("\n".join(lines) + "\n")
    params = {"csv": str(tmp_path / "image_labels_train.csv"), "path_template": "train/{image_id}.png",
              "id_column": "image_id", "finding": "Pleural effusion", "no_finding": "No finding",
              "finding_columns": ["*"], "reader_column": "rad_id"}
    m = build_manifest(DataConfig(source="image_csv", split_fractions=(0.34, 0.33, 0.33), params=params))
    assert dict(zip(m.frame["id"], m.frame["label"])) == {"b1": 1, "b2": 0}  # b3 other finding, b4 uncertain
    m = build_manifest(DataConfig(source="image_csv", split_fractions=(0.34, 0.33, 0.33),
                                  params={**params, "uncertain": "positive"}))
    assert dict(zip(m.frame["id"], m.frame["label"])) == {"b1": 1, "b2": 0, "b4": 1}
