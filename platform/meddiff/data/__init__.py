"""Data layer: manifests (which images, labels, splits), sources that build them, and the decoder that reads pixels.

    from meddiff.data import build_manifest, ImageDecoder, ManifestDataset
    manifest = build_manifest(cfg.data)                     # validated, split, optionally balanced
    dataset = ManifestDataset(manifest.select("train"), ImageDecoder.from_config(cfg.data))
"""

from meddiff.data.dataset import ManifestDataset
from meddiff.data.decode import ImageDecoder
from meddiff.data.manifest import MANIFEST_COLUMNS, Manifest
from meddiff.data.sources import SOURCES, build_manifest

__all__ = ["MANIFEST_COLUMNS", "SOURCES", "ImageDecoder", "Manifest", "ManifestDataset", "build_manifest"]
