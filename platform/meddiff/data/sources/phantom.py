"""Synthetic phantom source: ``n_per_class`` normal and abnormal chest phantoms, no files needed.

Rows are ``phantom://<seed>`` + index + label; ``meddiff.data.phantoms`` renders the pixels at decode time, so the same
manifest decodes identically in any process. build_manifest makes the stratified split.
"""

from __future__ import annotations

from dataclasses import dataclass

from meddiff.errors import ConfigError
from meddiff.data.manifest import NO_GROUPS, Manifest, manifest_frame
from meddiff.data.phantoms import CLASS_NAMES, phantom_uri


@dataclass(frozen=True)
class PhantomParams:
    """n_per_class: images per class. seed: the phantom set (different seeds give different anatomy and noise)."""

    n_per_class: int = 300
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_per_class < 1:
            raise ConfigError(f"data.params.n_per_class: expected a positive integer, got {self.n_per_class!r}")
        if self.seed < 0:
            raise ConfigError(f"data.params.seed: expected a non-negative integer, got {self.seed!r}")


def build(params: PhantomParams, data_cfg: object = None) -> Manifest:
    """Indices 0..n-1 are normal (label 0), n..2n-1 abnormal (label 1)."""
    n = params.n_per_class
    indices = list(range(2 * n))
    frame = manifest_frame(
        ids=[f"phantom/{params.seed}/{i:05d}" for i in indices],
        labels=[0] * n + [1] * n,
        source="phantom",
        paths=[phantom_uri(params.seed)] * (2 * n),
        array_indices=indices,
    )
    return Manifest(frame, CLASS_NAMES, f"phantom/{params.seed}", grouping=NO_GROUPS)
