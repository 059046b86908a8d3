"""ISIC 2020 challenge layout: a ground-truth CSV (``image_name``, ``target``, ...) and a folder of ``{image_name}.jpg``.

target 0 = benign, 1 = melanoma. The challenge's test set has no public labels, so build_manifest makes a seeded
stratified split (balanced first when data.balance is set, as the paper does).

Groups: ``group_column`` (default ``patient_id`` when the CSV has it, as ISIC 2020's does; a lesion id column works
too); the split then keeps each patient in one split. Without such a column each image is its own group.
Metadata: by default ``sex``, ``age_band`` (from ``age_approx``: "<40", "40-59", "60-79", "80+") and ``site``
(``anatom_site_general_challenge``) when the CSV has them; ``metadata_columns`` replaces them by columns kept as text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from meddiff.errors import DataError
from meddiff.data.manifest import NO_GROUPS, Manifest, manifest_frame
from meddiff.data.sources.tables import (
    age_band, check_unique, checked_paths, group_ids, metadata_rows, read_table, require_columns, require_nonblank, row_ref,
)

CLASS_NAMES = ("benign", "melanoma")


@dataclass(frozen=True)
class IsicChallengeParams:
    """csv: ground truth (e.g. ISIC_2020_Training_GroundTruth.csv). image_dir: folder of {image_name}.jpg.
    group_column: patient / lesion id column (default: patient_id when present, else no groups).
    metadata_columns: columns kept as metadata text (default: sex, age band, site when present).
    allow_outside_root: allow image paths that resolve outside image_dir (see tables.checked_paths)."""

    csv: str
    image_dir: str
    group_column: str | None = None
    metadata_columns: tuple[str, ...] | None = None
    allow_outside_root: bool = False


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
    paths = checked_paths(paths, refs, ids, image_dir, params.allow_outside_root, str(csv))
    group_column = params.group_column or ("patient_id" if "patient_id" in table.columns else None)
    groups = group_ids(table, group_column, csv) if group_column else None
    frame = manifest_frame(ids=ids, labels=labels, source="isic_challenge", paths=paths, groups=groups,
                           metadata=_metadata(table, params.metadata_columns, csv))
    grouping = f"{group_column} (column of {csv.name})" if group_column else NO_GROUPS
    return Manifest(frame, CLASS_NAMES, f"isic_challenge/{csv.stem}", grouping=grouping)


def _metadata(table, columns: tuple[str, ...] | None, csv: Path) -> list[dict[str, str]]:
    if columns is not None:
        return metadata_rows(table, columns, csv)
    kept = [c for c in ("sex", "anatom_site_general_challenge") if c in table.columns]
    rows = metadata_rows(table, kept, csv, rename={"anatom_site_general_challenge": "site"})
    if "age_approx" in table.columns:
        for row, (index, text) in zip(rows, table["age_approx"].items()):
            band = age_band(text, row_ref(csv, index))
            if band is not None:
                row["age_band"] = band
    return rows


def _target(text: str, csv: Path, index: int) -> int:
    try:
        value = float(text)
    except ValueError:
        value = None
    if value not in (0.0, 1.0):
        raise DataError(f"{row_ref(csv, index)}: target={text!r}; expected 0 (benign) or 1 (melanoma)")
    return int(value)
