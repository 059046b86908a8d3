"""ManifestDataset: items, batching and errors."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from meddiff.config import DataConfig
from meddiff.data import ImageDecoder, ManifestDataset, build_manifest
from meddiff.errors import DataError


def test_items_and_loader(shared_data):
    cfg = DataConfig(source="medmnist", params={"path": str(shared_data("pneumoniamnist_balanced/pneumoniamnist_balanced.npz"))},
                     image_size=32, channels=1)
    manifest = build_manifest(cfg).select("val")
    dataset = ManifestDataset(manifest, ImageDecoder.from_config(cfg))
    assert len(dataset) == 270
    image, label, index = dataset[5]
    assert image.shape == (1, 32, 32) and label == int(manifest.frame["label"][5]) and index == 5
    images, labels, indices = next(iter(torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=False)))
    assert images.shape == (16, 1, 32, 32) and labels.dtype == torch.int64 and indices.tolist() == list(range(16))
    with pytest.raises(IndexError):
        dataset[270]


def test_missing_file_raises(tmp_path, write_image):
    for i in range(10):
        write_image(tmp_path / f"{i}.png", seed=i)
    pd.DataFrame({"path": [f"{i}.png" for i in range(10)], "y": [0, 1] * 5}).to_csv(tmp_path / "l.csv", index=False)
    cfg = DataConfig(source="image_csv", params={"csv": str(tmp_path / "l.csv"), "label_column": "y",
                                                 "label_names": {0: "a", 1: "b"}})
    manifest = build_manifest(cfg)
    dataset = ManifestDataset(manifest, ImageDecoder(16, 3))
    (tmp_path / "3.png").unlink()  # deleted after the manifest was built
    position = manifest.frame.index[manifest.frame["id"] == "3"][0]
    with pytest.raises(DataError, match=r"3.png \(manifest id '3'\): image file does not exist"):
        dataset[position]
