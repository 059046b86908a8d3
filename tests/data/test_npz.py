"""meddiff.data.npz on honest files: headers read without loading, budgets enforced from the module constants."""

from __future__ import annotations

import numpy as np
import pytest

from meddiff.data import npz
from meddiff.errors import DataError


def _write(tmp_path):
    path = tmp_path / "x.npz"
    np.savez_compressed(path, train_images=np.zeros((5, 8, 8, 3), np.uint8), train_labels=np.arange(5, dtype=np.int16),
                        extra=np.ones(3, np.float32))
    return path


def test_headers_of_an_honest_compressed_file(tmp_path):
    headers = npz.npz_headers(_write(tmp_path))
    assert headers == {"train_images": ((5, 8, 8, 3), np.dtype(np.uint8)),
                       "train_labels": ((5,), np.dtype(np.int16)), "extra": ((3,), np.dtype(np.float32))}
    assert npz.load_npz_key(tmp_path / "x.npz", "train_labels").tolist() == [0, 1, 2, 3, 4]


def test_budget_is_the_module_constant(tmp_path, monkeypatch):
    path = _write(tmp_path)
    monkeypatch.setattr(npz, "IMAGES_BUDGET_BYTES", 5 * 8 * 8 * 3 - 1)
    with pytest.raises(DataError, match=r"key 'train_images': its header claims shape \(5, 8, 8, 3\) of uint8"):
        npz.load_npz_key(path, "train_labels")  # any load checks every header first
    monkeypatch.setattr(npz, "IMAGES_BUDGET_BYTES", 5 * 8 * 8 * 3)
    assert npz.npz_headers(path)["train_images"][0] == (5, 8, 8, 3)


def test_missing_key_names_the_keys(tmp_path):
    with pytest.raises(DataError, match=r"missing key 'val_images'; the file holds \['extra', 'train_images'"):
        npz.load_npz_key(_write(tmp_path), "val_images")
