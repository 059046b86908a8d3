"""MIMIC-CXR-JPG (Johnson et al. 2019): one finding vs no finding, grouped by patient, with the official split.

``root`` holds ``mimic-cxr-2.0.0-metadata.csv`` (``dicom_id, subject_id, study_id, ViewPosition``),
``mimic-cxr-2.0.0-chexpert.csv`` (``subject_id, study_id`` and one column per finding: 1 positive, 0 negative,
-1 uncertain, blank not mentioned; labels are per study), ``mimic-cxr-2.0.0-split.csv`` (``dicom_id, study_id,
subject_id, split`` = train / validate / test), each plain or gzipped (``.csv.gz``), and the images at
``files/p<first two digits of subject_id>/p<subject_id>/s<study_id>/<dicom_id>.jpg``.

Labels: ``finding`` (a chexpert column, e.g. "Pleural Effusion") is class 1, the "No Finding" column class 0, other
findings / uncertain labels by ``other_findings`` / ``uncertain`` (``meddiff/data/sources/findings.py``); images of
studies without a chexpert row are dropped and counted. ``views``: ViewPosition values kept (default all).
``official_split: true`` (default) uses the split file (validate -> val; an image missing from it or an unknown split
value is an error); ``false`` leaves the split to build_manifest (by patient).
Groups: ``subject_id``. Metadata: view, and with ``patients_csv`` (MIMIC-IV ``patients.csv``: ``subject_id, gender,
anchor_age``) sex, age ("90+" above 89) and age_band. Ids: ``dicom_id``. ``missing_images``: error | skip.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from meddiff.data.demographics import age_columns, parse_age_years, sex_code
from meddiff.data.manifest import Manifest, manifest_frame
from meddiff.data.sources import findings as F
from meddiff.data.sources.nih_cxr14 import keep_present
from meddiff.data.sources.tables import check_unique, checked_paths, read_table, require_columns, require_nonblank, row_ref
from meddiff.errors import DataError

logger = logging.getLogger(__name__)

PREFIX = "mimic-cxr-2.0.0-"
KEYS = ("subject_id", "study_id")
SPLIT_VALUES = {"train": "train", "validate": "val", "test": "test"}
NO_FINDING = "No Finding"


@dataclass(frozen=True)
class MimicCxrParams:
    """root: the MIMIC-CXR-JPG folder. finding: a chexpert column (class 1). other_findings: exclude | negative.
    uncertain: exclude | positive | negative. views: ViewPosition values kept. official_split: use the split file.
    patients_csv: MIMIC-IV patients.csv for sex / age. missing_images: error | skip."""

    root: str
    finding: str
    other_findings: str = "exclude"
    uncertain: str = "exclude"
    views: tuple[str, ...] = ()
    official_split: bool = True
    patients_csv: str | None = None
    missing_images: str = "error"
    allow_outside_root: bool = False


def table_file(root: Path, name: str) -> Path:
    """``root/<PREFIX><name>.csv`` or its ``.csv.gz``; DataError naming both when neither exists."""
    for suffix in (".csv", ".csv.gz"):
        path = root / f"{PREFIX}{name}{suffix}"
        if path.is_file():
            return path
    raise DataError(f"{root}: neither {PREFIX}{name}.csv nor {PREFIX}{name}.csv.gz exists")


def _study_labels(root: Path, rule: F.FindingRule) -> dict[tuple[str, str], int]:
    csv = table_file(root, "chexpert")
    table = read_table(csv)
    require_columns(table, KEYS, csv)
    findings = [c for c in table.columns if c not in KEYS]
    F.check_names(rule, findings, f"{csv} (its finding columns)")
    keys = list(zip(table["subject_id"].str.strip(), table["study_id"].str.strip()))
    check_unique([f"{s}/{t}" for s, t in keys], [row_ref(csv, i) for i in table.index], "subject_id/study_id")
    labels = F.labels(F.column_readings(table, findings, csv), rule, f"{csv} (studies)")
    return {key: value for key, value in zip(keys, labels) if value is not None}


def _patients(path: Path) -> dict[str, dict[str, str]]:
    table = read_table(path)
    require_columns(table, ["subject_id", "gender", "anchor_age"], path)
    out = {}
    for index, subject, gender, age in zip(table.index, table["subject_id"], table["gender"], table["anchor_age"]):
        try:
            meta = age_columns(parse_age_years(age))
        except ValueError:
            raise DataError(f"{row_ref(path, index)}: malformed anchor_age {age!r}; expected an age in years") from None
        if sex_code(gender):
            meta["sex"] = sex_code(gender)
        out[subject.strip()] = meta
    return out


def _splits(root: Path, dicom_ids: list[str]) -> list[str]:
    csv = table_file(root, "split")
    table = read_table(csv)
    require_columns(table, ["dicom_id", "split"], csv)
    split = {}
    for index, dicom_id, value in zip(table.index, table["dicom_id"].str.strip(), table["split"].str.strip()):
        if value not in SPLIT_VALUES:
            raise DataError(f"{row_ref(csv, index)}: split={value!r}; expected one of {list(SPLIT_VALUES)}")
        split[dicom_id] = SPLIT_VALUES[value]
    missing = [d for d in dicom_ids if d not in split]
    if missing:
        raise DataError(f"{csv}: {len(missing)} kept image(s) have no split row, e.g. {missing[:5]} (set "
                        "data.params.official_split: false to split by patient here)")
    return [split[d] for d in dicom_ids]


def build(params: MimicCxrParams, data_cfg: object = None) -> Manifest:
    rule = F.FindingRule(params.finding, NO_FINDING, other_findings=params.other_findings, uncertain=params.uncertain)
    root = Path(params.root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"{root}: MIMIC-CXR-JPG root folder does not exist")
    study_labels = _study_labels(root, rule)
    csv = table_file(root, "metadata")
    table = read_table(csv)
    require_columns(table, ["dicom_id", *KEYS, "ViewPosition"], csv)
    for column in ("dicom_id", *KEYS):
        require_nonblank(table, column, csv)
    check_unique(table["dicom_id"].str.strip().tolist(), [row_ref(csv, i) for i in table.index], "dicom_id")
    if params.views:
        keep = table["ViewPosition"].str.strip().isin(params.views)
        logger.info("%s: kept %d of %d image(s) with ViewPosition in %s", csv, int(keep.sum()), len(table),
                    list(params.views))
        table = table[keep]
    keys = list(zip(table["subject_id"].str.strip(), table["study_id"].str.strip()))
    labelled = np.array([k in study_labels for k in keys], dtype=bool)
    logger.info("%s: %d image(s) of studies with a label, %d dropped (study dropped by the finding rule or absent "
                "from the chexpert file)", csv, int(labelled.sum()), int((~labelled).sum()))
    table = table[labelled]
    keys = [k for k, keep in zip(keys, labelled) if keep]
    dicom_ids = table["dicom_id"].str.strip().tolist()
    paths = {d: root / "files" / f"p{s[:2]}" / f"p{s}" / f"s{t}" / f"{d}.jpg" for d, (s, t) in zip(dicom_ids, keys)}
    present = keep_present(dicom_ids, {d: p for d, p in paths.items() if p.is_file()},
                           [row_ref(csv, i) for i in table.index], params.missing_images, str(root / "files"))
    table, keys = table[present], [k for k, keep in zip(keys, present) if keep]
    dicom_ids = table["dicom_id"].str.strip().tolist()
    patients = _patients(Path(params.patients_csv).expanduser().resolve()) if params.patients_csv else {}
    metadata = []
    for (subject, _), view in zip(keys, table["ViewPosition"].str.strip()):
        meta = dict(patients.get(subject, {}))
        if view:
            meta["view"] = view
        metadata.append(meta)
    splits = _splits(root, dicom_ids) if params.official_split else None
    checked = checked_paths([str(paths[d]) for d in dicom_ids], [row_ref(csv, i) for i in table.index], dicom_ids,
                            root, params.allow_outside_root, str(csv))
    frame = manifest_frame(ids=dicom_ids, labels=[study_labels[k] for k in keys], source="mimic_cxr",
                           paths=checked, splits=splits, groups=[s for s, _ in keys],
                           metadata=metadata)
    return Manifest(frame, rule.class_names, f"mimic_cxr/{rule.class_names[1]}", grouping="patient (subject_id)")
