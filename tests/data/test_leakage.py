"""Leakage checks at manifest build: a planted exact duplicate and a planted near duplicate (a brightened copy) across
splits are found, clean data reports 0; multi-index hashing finds exactly the brute-force pairs; official splits that
share a group are reported (warning), the levels run what they say."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from meddiff.config import DataConfig
from meddiff.data import build_manifest
from meddiff.data.leakage import dhash, near_pairs
from meddiff.data.summary import format_summary, manifest_summary
from meddiff.errors import ConfigError


def _smooth(seed: int, size: int = 48) -> np.ndarray:
    """A smooth random grayscale image (a 6 x 6 random field upsampled), uint8 [size, size], values 40..215."""
    small = np.random.default_rng(seed).integers(40, 216, (6, 6), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC))


def _fixture(tmp_path, plant: bool):
    """20 images with an official split column (train 0-13, val 14-16, test 17-19). With ``plant``: test image 17 is a
    byte copy of train image 0 and test image 18 is train image 1 brightened by 12 grey levels."""
    rows = []
    for i in range(20):
        pixels = _smooth(i)
        if plant and i == 17:
            pixels = _smooth(0)
        if plant and i == 18:
            pixels = np.clip(_smooth(1).astype(np.int16) + 12, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"im{i:02d}.png")
        split = "train" if i < 14 else "val" if i < 17 else "test"
        rows.append({"path": f"im{i:02d}.png", "label": str(i % 2), "split": split, "patient": f"P{i}"})
    csv = tmp_path / "labels.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def _cfg(csv, **kw):
    params = {"csv": str(csv), "label_column": "label", "label_names": {"0": "a", "1": "b"}, "split_column": "split"}
    params.update(kw.pop("params", {}))
    return DataConfig(source="image_csv", params=params, **kw)


def test_planted_exact_and_near_duplicates_are_found(tmp_path, caplog):
    csv = _fixture(tmp_path, plant=True)
    with caplog.at_level(logging.WARNING, logger="meddiff.data.sources"):
        checks = build_manifest(_cfg(csv)).checks
    assert checks["level"] == "full" and checks["official_splits"] is True
    exact = checks["exact_duplicates"]
    assert exact["pairs_across_splits"] == 1 and exact["images_involved"] == 2 and exact["test_images_involved"] == 1
    assert exact["examples"] == [{"a": "im00", "b": "im17", "splits": ["train", "test"]}]
    near = checks["near_duplicates"]
    assert near["pairs_across_splits"] == 1 and near["images_involved"] == 2 and near["test_images_involved"] == 1
    assert [(e["a"], e["b"], e["splits"]) for e in near["examples"]] == [("im01", "im18", ["train", "test"])]
    assert near["examples"][0]["hamming"] <= near["max_hamming"] and near["examples"][0]["correlation"] >= 0.98
    assert "1 exact duplicates pair(s) across splits" in caplog.text
    assert "1 near duplicates pair(s) across splits" in caplog.text


def test_clean_data_reports_zero(tmp_path):
    checks = build_manifest(_cfg(_fixture(tmp_path, plant=False))).checks
    assert checks["groups"]["across_splits"] == 0
    assert checks["exact_duplicates"]["pairs_across_splits"] == 0
    assert checks["near_duplicates"]["pairs_across_splits"] == 0
    assert checks["exact_duplicates"]["examples"] == [] and checks["near_duplicates"]["examples"] == []


def test_levels(tmp_path):
    csv = _fixture(tmp_path, plant=True)
    exact = build_manifest(_cfg(csv, leakage_check="exact")).checks
    assert exact["exact_duplicates"]["pairs_across_splits"] == 1 and "near_duplicates" not in exact
    groups = build_manifest(_cfg(csv, leakage_check="groups")).checks
    assert set(groups) == {"level", "official_splits", "groups", "seconds"}
    assert build_manifest(_cfg(csv, leakage_check="off")).checks == {"level": "off", "official_splits": True}
    with pytest.raises(ConfigError, match="data.leakage_check: expected one of full, exact, groups, off"):
        DataConfig(leakage_check="some")


def test_official_splits_sharing_a_patient_are_reported(tmp_path, caplog):
    csv = _fixture(tmp_path, plant=False)
    table = pd.read_csv(csv, dtype=str)
    table.loc[19, "patient"] = "P3"  # test image 19 belongs to train patient P3
    table.to_csv(csv, index=False)
    with caplog.at_level(logging.WARNING, logger="meddiff.data.sources"):
        m = build_manifest(_cfg(csv, params={"group_column": "patient"}, leakage_check="groups"))
    assert m.checks["groups"]["across_splits"] == 1
    assert m.checks["groups"]["examples"] == {"P3": ["test", "train"]}
    assert "official splits put 1 group(s) in two splits" in caplog.text
    text = format_summary(manifest_summary(m))
    assert "grouping: patient (column of labels.csv)" in text and "group P3 in splits ['test', 'train']" in text
    assert "leakage (groups, official splits): groups across splits 1" in text


def test_dhash_is_stable_under_brightening_and_differs_between_images():
    a = _smooth(3)
    brighter = np.clip(a.astype(np.int16) + 20, 0, 255).astype(np.uint8)
    assert bin(dhash(a) ^ dhash(brighter)).count("1") <= 2
    assert bin(dhash(a) ^ dhash(_smooth(4))).count("1") > 10


@pytest.mark.parametrize("max_distance", [0, 3, 6])
def test_near_pairs_equal_brute_force(max_distance):
    rng = np.random.default_rng(max_distance)
    base = rng.integers(0, 2**63, 300, dtype=np.int64).astype(np.uint64)
    near = base[:150].copy()
    for k, bits in enumerate(rng.integers(0, 64, (150, 7))):
        for b in bits[: k % 8]:
            near[k] ^= np.uint64(1) << np.uint64(int(b))
    hashes = np.concatenate([base, near])
    labels = rng.integers(0, 3, len(hashes))
    dist = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    i, j = np.nonzero(np.triu(dist <= max_distance, k=1) & (labels[:, None] != labels[None, :]))
    expected = {(int(a), int(b), int(dist[a, b])) for a, b in zip(i, j)}
    assert len(expected) > 10
    assert near_pairs(hashes, max_distance, labels) == expected


def test_an_undecodable_image_is_left_out_not_fatal(tmp_path):
    csv = _fixture(tmp_path, plant=True)
    (tmp_path / "im05.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    checks = build_manifest(_cfg(csv)).checks  # scoring marks the row failed; the manifest still builds
    assert checks["near_duplicates"]["undecodable"] == 1
    assert checks["near_duplicates"]["pairs_across_splits"] == 1 and checks["exact_duplicates"]["pairs_across_splits"] == 1
