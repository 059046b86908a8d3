"""Derived metadata columns (``data.derive``): regex + bins, map, errors naming the row; the ISIC presets' archive
batch on the real isic_skin_180 data, with its leakage report; ``meddiff data`` prints and writes the summary."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from meddiff.cli import main
from meddiff.config import DataConfig, load_config
from meddiff.data import build_manifest
from meddiff.data.manifest import NO_GROUPS
from meddiff.errors import ConfigError, DataError

PRESETS = __import__("pathlib").Path(__file__).resolve().parents[2] / "platform" / "meddiff" / "presets"
BATCH = {"from": "id", "regex": r"ISIC_(\d+)", "bins": [0, 11000, 24306, 34321, 1000000000],
         "labels": ["archive_0-10999", "archive_11000-24305", "ham10000", "archive_34321+"]}


def _fixture(tmp_path, write_image, names, views=None):
    for i, name in enumerate(names):
        write_image(tmp_path / f"{name}.png", size=(12, 12), mode="L", fmt="PNG", seed=i)
    table = pd.DataFrame({"path": [f"{n}.png" for n in names], "label": [str(i % 2) for i in range(len(names))],
                          "view": views or ["AP"] * len(names)})
    table.to_csv(tmp_path / "labels.csv", index=False)
    return tmp_path / "labels.csv"


def _cfg(csv, derive, **params):
    return DataConfig(source="image_csv", derive=derive, params={
        "csv": str(csv), "label_column": "label", "label_names": {"0": "a", "1": "b"}, **params})


def test_regex_bins_and_map(tmp_path, write_image):
    names = ["ISIC_0000000", "ISIC_0010999", "ISIC_0011000", "ISIC_0024306", "ISIC_0034320", "ISIC_0034321"]
    csv = _fixture(tmp_path, write_image, names, views=["AP", "PA", "AP", "LL", "PA", "AP"])
    m = build_manifest(_cfg(csv, {"archive_batch": BATCH, "frontal": {"from": "view", "map": {"AP": "yes", "PA": "yes",
                                                                                               "LL": "no"}}},
                            metadata_columns=["view"]))
    meta = m.frame.set_index("id")["metadata"].map(json.loads)
    assert [meta[n]["archive_batch"] for n in names] == ["archive_0-10999", "archive_0-10999", "archive_11000-24305",
                                                         "ham10000", "ham10000", "archive_34321+"]
    assert [meta[n]["frontal"] for n in names] == ["yes", "yes", "yes", "no", "yes", "yes"]
    assert m.metadata_columns()["frontal"] == {"no": 1, "yes": 5}


def test_bad_rows_are_named(tmp_path, write_image):
    csv = _fixture(tmp_path, write_image, ["ISIC_0000001", "other_image", "ISIC_0000003"])
    with pytest.raises(DataError, match=r"data.derive.archive_batch: row id 'other_image' \(.*other_image.png\): "
                                        r"id='other_image' does not match regex"):
        build_manifest(_cfg(csv, {"archive_batch": BATCH}))
    with pytest.raises(DataError, match=r"row id 'ISIC_0000003' .*: id value 3 is outside the bins \[0, 2\)"):
        build_manifest(_cfg(csv, {"b": {"from": "id", "regex": r"_(\d+)$", "bins": [0, 2], "labels": ["x"]}},
                            where={"label": "0"}))
    with pytest.raises(DataError, match=r"row id 'ISIC_0000001' .*: view value 'AP' is not in map \['PA'\]"):
        build_manifest(_cfg(csv, {"v": {"from": "view", "map": {"PA": "p"}}}, metadata_columns=["view"]))
    with pytest.raises(DataError, match=r"has no column or metadata key 'ward'"):
        build_manifest(_cfg(csv, {"v": {"from": "ward", "map": {"1": "x"}}}))


@pytest.mark.parametrize("rule, message", [
    ({"from": "id", "bins": [0, 1]}, r"data.derive.x: 2 bin edges need 1 labels"),
    ({"from": "id", "bins": [2, 1], "labels": ["a"]}, r"data.derive.x: bins must increase strictly"),
    ({"from": "id", "map": {"a": "b"}, "bins": [0, 1], "labels": ["a"]}, r"exactly one of bins \(with labels\) or map"),
    ({"from": "id", "regex": "ISIC_\\d+", "map": {"a": "b"}}, r"must have exactly one capture group, has 0"),
    ({"regex": "(x)", "map": {"a": "b"}}, r"data.derive.x: missing key 'from'"),
    ({"from": "id", "map": {"a": "b"}, "bin": [1]}, r"data.derive.x: unknown key\(s\) \['bin'\]"),
])
def test_bad_rules_are_config_errors(tmp_path, write_image, rule, message):
    csv = _fixture(tmp_path, write_image, ["ISIC_0000001", "ISIC_0000002"])
    with pytest.raises(ConfigError, match=message):
        build_manifest(_cfg(csv, {"x": rule}))


def test_isic_preset_archive_batch_and_leakage_on_real_data(shared_data, monkeypatch, tmp_path, capsys):
    root = shared_data("isic_skin_180/labels.csv").parent.parent
    monkeypatch.setenv("MEDDIFF_DATA", str(root))
    m = build_manifest(load_config(PRESETS / "demo-isic.yaml").data)
    # melanoma vs benign without cross-class duplicates, md5-deduplicated, balanced 375 + 375
    assert len(m) == 750 and m.grouping == NO_GROUPS
    batches = m.metadata_columns()["archive_batch"]
    assert sum(batches.values()) == 750 and set(batches) <= {"archive_0-10999", "archive_11000-24305", "ham10000",
                                                             "archive_34321+"}
    assert batches["archive_0-10999"] > 100 and batches["ham10000"] > 100
    checks = m.checks
    assert checks["level"] == "full" and checks["official_splits"] is False
    assert checks["groups"] == {"n_groups": 750, "across_splits": 0, "examples": {}}
    assert checks["exact_duplicates"]["pairs_across_splits"] == 0  # the preset dedupes by md5
    near = checks["near_duplicates"]
    assert near["candidates"] >= near["pairs_across_splits"] == len(near["examples"]) >= 1
    assert {"a": "Train/melanoma/ISIC_0000399", "b": "Train/melanoma/ISIC_0001124"}.items() <= \
        near["examples"][0].items()
    out = tmp_path / "summary.json"
    assert main(["data", str(PRESETS / "demo-isic.yaml"), "--json", str(out),
                 "--set", "data.leakage_check=exact"]) == 0
    printed = capsys.readouterr().out
    assert "metadata archive_batch: archive_0-10999" in printed and "exact duplicate pairs across splits 0" in printed
    summary = json.loads(out.read_text())
    assert summary["rows_per_split"]["train"] == {"benign": 300, "melanoma": 300}
    assert summary["leakage"]["level"] == "exact" and "near_duplicates" not in summary["leakage"]
    assert summary["groups_per_split"] == {"train": 600, "val": 76, "test": 74}
