"""Real data: the metadata-only probe flags the ISIC archive batch of isic_skin_180 (demo-isic preset) as a shortcut.

Every melanoma of isic_skin_180 comes from the early ISIC archive (ids below ISIC_0011000) while the later images are
benign, so the acquisition batch alone predicts the label. Fails (not skips) under CI=true when the data is missing.
"""

from __future__ import annotations

import json

import pandas as pd

from meddiff.config import load_config, resolve_config_path
from meddiff.data.sources import build_manifest
from meddiff.results import schema as S
from meddiff.results import strata as T
from tests.conftest import SHARED_DATA, require_data


def archive_batch(image_id: str) -> str:
    number = int(image_id.rsplit("ISIC_", 1)[1])
    return "early" if number < 11000 else "later"


def test_probe_flags_the_isic_archive_batch(monkeypatch):
    require_data("isic_skin_180/labels.csv")
    monkeypatch.setenv("MEDDIFF_DATA", str(SHARED_DATA))
    manifest = build_manifest(load_config(resolve_config_path("demo-isic")).data)
    f = manifest.frame
    frame = pd.DataFrame({S.IMAGE_ID: f["id"], S.LABEL: f["label"], S.GROUP: f["group"], S.STATUS: S.STATUS_OK,
                          S.METADATA: [json.dumps({"archive_batch": archive_batch(i)}) for i in f["id"]]})
    probe = T.shortcut_probe(frame, n_boot=300, num_classes=2)
    assert probe.available and probe.verdict == "shortcut suspected"
    row = probe.probe.iloc[0]
    assert row["auc_lo"] > T.SHORTCUT_AUC and row["balanced_accuracy"] > 0.75
    assert set(probe.baselines["reference"]) == {"majority class (always predicts the most frequent class)",
                                                 "metadata-only probe (all columns)"}
