"""ISIC 2020 challenge layout: a ground-truth CSV (``image_name``, ``target``, ...) and a folder of ``{image_name}.jpg``.

target 0 = benign, 1 = melanoma. The challenge's test set has no public labels, so build_manifest makes a seeded
stratified split (balanced first when data.balance is set, as the paper does).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from meddiff.errors import DataError
from meddiff.data.manifest import Manifest, manifest_frame
from meddiff.data.sources.tables import (
    check_files_exist, check_unique, read_table, require_columns, require_nonblank, row_ref,
)

CLASS_NAMES = ("benign", "melanoma")


@dataclass(frozen=True)
class IsicChallengeParams:
    """csv: ground truth (e.g. ISIC_2020_Training_GroundTruth.csv). image_dir: folder of {image_name}.jpg."""

    csv: str
    image_dir: str


def build(params: IsicChallengeParams, data_cfg: object = None) -> Manifest:
    csv = Path(params.csv).expanduser().resolve()
    image_dir = Path(params.image_dir).expanduser().resolve()
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: ISIC image folder does not exist; expected a folder of {{image_name}}.jpg")
    table = read_table(csv)
    require_columns(table, ("image_name", "target"), csv)
    require_nonblank(table, "image_name", csv)
    labels = [_target(text, csv, index) for index, text in table["target"].items()]
    refs = [row_ref(csv, i) for i in table.index]
    ids = table["image_name"].str.strip().tolist()
    check_unique(ids, refs, "image_name")
    paths = [str(image_dir / f"{name}.jpg") for name in ids]
    check_files_exist(paths, refs)
    frame = manifest_frame(ids=ids, labels=labels, source="isic_challenge", paths=paths)
    return Manifest(frame, CLASS_NAMES, f"isic_challenge/{csv.stem}")


def _target(text: str, csv: Path, index: int) -> int:
    try:
        value = float(text)
    except ValueError:
        value = None
    if value not in (0.0, 1.0):
        raise DataError(f"{row_ref(csv, index)}: target={text!r}; expected 0 (benign) or 1 (melanoma)")
    return int(value)
