"""Synthetic phantoms: deterministic, two classes, separable but not trivially."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meddiff.config import DataConfig
from meddiff.data import ImageDecoder, ManifestDataset, build_manifest
from meddiff.data.phantoms import PHANTOM_SIZE, opacity_mask, phantom_geometry, render_phantom
from meddiff.errors import ConfigError, DataError


def test_manifest_has_both_classes_and_is_deterministic():
    cfg = DataConfig(source="phantom", params={"n_per_class": 50, "seed": 7})
    m = build_manifest(cfg)
    assert m.class_names == ("normal", "abnormal")
    assert m.class_counts() == {"normal": 50, "abnormal": 50}
    assert m.class_counts("train") == {"normal": 40, "abnormal": 40}
    assert set(m.frame["path"]) == {"phantom://7"} and set(m.frame["array_key"]) == {""}
    assert m.fingerprint() == build_manifest(cfg).fingerprint()
    assert len(build_manifest(DataConfig(source="phantom"))) == 600  # default 300 per class


def test_render_is_deterministic_and_seed_dependent():
    a = render_phantom(0, 5, 1)
    assert a.dtype == np.uint8 and a.shape == (PHANTOM_SIZE, PHANTOM_SIZE)
    assert (a == render_phantom(0, 5, 1)).all()
    assert not (a == render_phantom(1, 5, 1)).all()
    assert not (a == render_phantom(0, 6, 1)).all()


def test_classes_differ_exactly_in_the_opacity_region():
    for index in range(20):
        normal, abnormal = (render_phantom(0, index, lab).astype(float) for lab in (0, 1))
        mask = opacity_mask(0, index)
        assert mask.sum() > 5
        assert abnormal[mask].mean() - normal[mask].mean() > 15  # gray levels: the opacity is genuinely brighter
        assert np.abs(abnormal - normal)[~mask].mean() < 3  # and nothing else changes much


def test_separable_but_not_trivially():
    """A lung-field feature separates the classes well; the global mean intensity does not."""
    n = 150
    labels = np.array([0] * n + [1] * n)
    images = [render_phantom(3, i, int(label)).astype(float) for i, label in enumerate(labels)]
    lung_p95 = []
    for i, image in enumerate(images):
        g = phantom_geometry(3, i)
        y, x = np.meshgrid(*(2 * [(np.arange(PHANTOM_SIZE) + 0.5) / PHANTOM_SIZE]), indexing="ij")
        lungs = np.zeros_like(image, dtype=bool)
        for e in g.lungs:
            lungs |= ((x - e.cx) / e.rx) ** 2 + ((y - e.cy) / e.ry) ** 2 < 0.8
        lung_p95.append(np.percentile(image[lungs], 95))
    global_mean = [image.mean() for image in images]

    def best_threshold_accuracy(feature):
        feature = np.asarray(feature)
        return max(((feature > t) == labels).mean() for t in np.unique(feature))

    assert best_threshold_accuracy(lung_p95) > 0.7
    assert best_threshold_accuracy(global_mean) < 0.7


def test_decode_phantom_rows_in_worker_processes():
    m = build_manifest(DataConfig(source="phantom", params={"n_per_class": 4}))
    dataset = ManifestDataset(m, ImageDecoder(image_size=16, channels=1))
    local = torch.stack([dataset[i][0] for i in range(len(dataset))])
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, num_workers=2)
    remote = torch.cat([batch[0] for batch in loader])
    assert torch.equal(local, remote)
    assert local.shape == (8, 1, 16, 16) and local.min() >= -1 and local.max() <= 1


def test_bad_params_and_labels():
    with pytest.raises(ConfigError, match="n_per_class"):
        build_manifest(DataConfig(source="phantom", params={"n_per_class": 0}))
    with pytest.raises(DataError, match="phantom label must be 0"):
        render_phantom(0, 0, 2)
