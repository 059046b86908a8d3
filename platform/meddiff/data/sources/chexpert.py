"""CheXpert (v1.0 / v1.0-small layout): pleural effusion vs no finding on frontal views, as in the paper.

``root`` holds ``train.csv`` and ``valid.csv`` (both are pooled; the paper makes its own split) with columns
``Path``, ``Frontal/Lateral``, ``No Finding``, ``Pleural Effusion``. Finding cells are 1 (positive), 0 (negative),
-1 (uncertain) or blank (not mentioned).
    class 0 "no_finding":       No Finding == 1 and Pleural Effusion != 1
    class 1 "pleural_effusion": Pleural Effusion == 1 and No Finding != 1
Rows that are neither (uncertain, blank, both positive) and lateral views are dropped.
``Path`` is relative to root's parent (``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``): a first
component equal to the root folder's name or starting with ``CheXpert-v1.0`` is the dataset folder itself and is
replaced by root (so a renamed root still works); any other path is taken relative to root.

Groups: the patient, the ``patientNNNNN`` component of ``Path`` (grouping "patient (from Path)"), so all studies and
views of one patient fall in one split. Metadata kept per row when the CSV has the column: ``sex`` (``Sex``),
``age_band`` (``Age`` in years: "<40", "40-59", "60-79", "80+"; blank stays absent) and ``view`` (``AP/PA``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import re

import numpy as np
import pandas as pd

from meddiff.errors import DataError
from meddiff.data.manifest import Manifest, manifest_frame
from meddiff.data.sources.findings import finding_value
from meddiff.data.sources.tables import (
    age_band, check_unique, checked_paths, read_table, require_columns, row_ref,
)

CSV_NAMES = ("train.csv", "valid.csv")
CLASS_NAMES = ("no_finding", "pleural_effusion")
COLUMNS = ("Path", "Frontal/Lateral", "No Finding", "Pleural Effusion")
GROUPING = "patient (from Path)"
_PATIENT = re.compile(r"^patient\d+$")


@dataclass(frozen=True)
class CheXpertParams:
    """root: the CheXpert folder holding train.csv and valid.csv (e.g. .../CheXpert-v1.0-small).
    allow_outside_root: allow image paths that resolve outside root (see tables.checked_paths)."""

    root: str
    allow_outside_root: bool = False


def build(params: CheXpertParams, data_cfg: object = None) -> Manifest:
    root = Path(params.root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"{root}: CheXpert root folder does not exist; expected a folder holding {list(CSV_NAMES)}")
    ids, labels, paths, refs, groups, metadata = [], [], [], [], [], []
    for name in CSV_NAMES:
        part = _read_csv(root, root / name)
        ids += part["id"].tolist()
        labels += part["label"].tolist()
        paths += part["path"].tolist()
        refs += part["ref"].tolist()
        groups += part["group"].tolist()
        metadata += part["metadata"].tolist()
    check_unique(ids, refs, "id (Path without extension)")
    paths = checked_paths(paths, refs, ids, root, params.allow_outside_root, str(root))
    frame = manifest_frame(ids=ids, labels=labels, source="chexpert", paths=paths, groups=groups, metadata=metadata)
    return Manifest(frame, CLASS_NAMES, f"chexpert/{root.name}", grouping=GROUPING)


def _patient(path: str, where: str) -> str:
    for part in PurePosixPath(path).parts:
        if _PATIENT.match(part):
            return part
    raise DataError(f"{where}: Path={path!r} has no patientNNNNN component; the patient id (group) comes from it")


def _metadata(table: pd.DataFrame, index: int, where: str) -> dict[str, str]:
    meta = {}
    if "Sex" in table.columns and table.at[index, "Sex"].strip():
        meta["sex"] = table.at[index, "Sex"].strip()
    if "Age" in table.columns:
        band = age_band(table.at[index, "Age"], where)
        if band is not None:
            meta["age_band"] = band
    if "AP/PA" in table.columns and table.at[index, "AP/PA"].strip():
        meta["view"] = table.at[index, "AP/PA"].strip()
    return meta


def _read_csv(root: Path, csv: Path) -> pd.DataFrame:
    """The kept rows of one CSV: columns id, label, path, ref (the CSV line, for error messages)."""
    table = read_table(csv, allow_no_rows=True)
    require_columns(table, COLUMNS, csv)
    _check_values(table, "Frontal/Lateral", ("Frontal", "Lateral"), csv)
    no_finding = _finding(table, "No Finding", csv)
    effusion = _finding(table, "Pleural Effusion", csv)
    frontal = (table["Frontal/Lateral"] == "Frontal").to_numpy()
    # NaN != 1 is True, so blank cells count as "not positive" here, as intended.
    label = np.full(len(table), -1)
    label[(no_finding == 1) & (effusion != 1)] = 0
    label[(effusion == 1) & (no_finding != 1)] = 1
    keep = frontal & (label >= 0)
    kept = table[keep]
    return pd.DataFrame(
        {
            "id": [str(PurePosixPath(p).with_suffix("")) for p in kept["Path"]],
            "label": label[keep],
            "path": [str(_resolve(root, p)) for p in kept["Path"]],
            "ref": [row_ref(csv, i) for i in kept.index],
            "group": [_patient(p, row_ref(csv, i)) for i, p in kept["Path"].items()],
            "metadata": [_metadata(table, i, row_ref(csv, i)) for i in kept.index],
        }
    )


def _finding(table: pd.DataFrame, column: str, csv: Path) -> np.ndarray:
    """[N] float: 1, 0, -1 or NaN for blank; any other cell is an error naming the line."""
    out = np.full(len(table), np.nan)
    for position, (index, text) in enumerate(table[column].items()):
        value = finding_value(text, column, csv, index)
        if value is not None:
            out[position] = value
    return out


def _check_values(table: pd.DataFrame, column: str, allowed: tuple[str, ...], csv: Path) -> None:
    bad = table.index[~table[column].isin(allowed)]
    if len(bad):
        raise DataError(f"{row_ref(csv, bad[0])}: {column}={table.at[bad[0], column]!r}; expected one of {list(allowed)}")


def _resolve(root: Path, relative: str) -> Path:
    parts = PurePosixPath(relative).parts
    if parts and (parts[0] == root.name or parts[0].startswith("CheXpert-v1.0")):
        parts = parts[1:]
    return root.joinpath(*parts)
