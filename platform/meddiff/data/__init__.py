"""Data layer: manifests (which images, labels, splits), sources that build them, and the decoder that reads pixels.

    from meddiff.data import build_manifest, ImageDecoder, ManifestDataset
    manifest = build_manifest(cfg.data)                     # validated, split, optionally balanced
    dataset = ManifestDataset(manifest.select("train"), ImageDecoder.from_config(cfg.data))

The names below are imported when first used (PEP 562), so a torch-free module (the results read model) can import
``meddiff.data.dicom`` or ``meddiff.data.sources.tables`` without pulling in the decoder's torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ManifestDataset": "meddiff.data.dataset",
    "ImageDecoder": "meddiff.data.decode",
    "MANIFEST_COLUMNS": "meddiff.data.manifest",
    "Manifest": "meddiff.data.manifest",
    "SOURCES": "meddiff.data.sources",
    "build_manifest": "meddiff.data.sources",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'meddiff.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
