"""A torch Dataset over a manifest: row i -> (image, label, i)."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from meddiff.data.decode import ImageDecoder
from meddiff.data.manifest import MANIFEST_COLUMNS, Manifest


class ManifestDataset(Dataset):
    """Decode manifest rows on demand.

    Item i is (image [C, S, S] float32 in [-1, 1], label int, i). A row that cannot be decoded raises its DataError:
    training must stop on bad data rather than silently train on fewer images (scoring uses decode_batch instead).
    """

    def __init__(self, manifest: Manifest, decoder: ImageDecoder) -> None:
        self.manifest = manifest
        self.decoder = decoder
        # Plain dicts: indexing a DataFrame row per item is slow, and dicts pickle cheaply into DataLoader workers.
        self._rows = manifest.frame.loc[:, list(MANIFEST_COLUMNS)].to_dict("records")

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        index = int(index)
        if not 0 <= index < len(self._rows):
            raise IndexError(f"ManifestDataset index {index} out of range for {len(self._rows)} rows")
        row = self._rows[index]
        return self.decoder.decode_row(row), int(row["label"]), index
