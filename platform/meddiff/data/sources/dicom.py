"""A folder of DICOM files with a labels CSV: patients grouped by their hashed PatientID, de-identified metadata.

``root`` is walked recursively; a file is DICOM when b"DICM" sits at byte 128 or its name ends in .dcm / .dicom (any
case), so exported files without a suffix are found; other files (a README, the labels CSV) are ignored and counted;
hidden files (".name") are skipped. Each DICOM header is read once (``meddiff/data/dicom_header.py``); pixels are read
later by the decoder.

Labels: ``labels_csv`` with a ``label_column`` mapped by ``label_names`` (as ``image_csv.py``: raw value -> class name,
in class order; ``exclude_labels`` drops raw values), keyed by
    ``key: path``             the file's path relative to ``root`` (``key_column``, default "path"), or
    ``key: sop_instance_uid`` the header's SOPInstanceUID (``key_column``, default "sop_instance_uid").
A CSV key that matches no file, a duplicate key and two files with one SOPInstanceUID are errors naming the lines or
files. DICOM files the CSV does not label: ``unlabelled_files: error`` (default, listing the first few) or ``ignore``
(counted in the log). Headers that cannot be read: ``unreadable_files: error`` (default, naming the file) or ``skip``
(counted).

Ids: the relative path without its .dcm/.dicom suffix (``id_from: path``, default) or the SOPInstanceUID
(``id_from: sop_instance_uid``, for folders whose names carry patient identifiers). Groups: ``groups: patient``
(default) hashes PatientID (a file without one is its own group, counted in the log); ``groups: none``. Metadata:
sex, age, age_band, view, manufacturer, body_part, modality, study_date (``date_precision``), sop_instance_uid.
Splits: ``split_column`` / ``split_values`` of the labels CSV as in ``image_csv.py`` (an official split); without
one build_manifest makes a stratified group split (by patient).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from meddiff.data.dicom_header import DATE_PRECISIONS, DicomHeader, has_dicom_magic, read_header
from meddiff.data.manifest import NO_GROUPS, Manifest, manifest_frame
from meddiff.data.sources.image_csv import _excluded, _label_index, _map_labels, _splits
from meddiff.data.sources.tables import check_unique, checked_paths, read_table, require_columns, require_nonblank, row_ref
from meddiff.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

DICOM_SUFFIXES = (".dcm", ".dicom")
KEYS = ("path", "sop_instance_uid")
GROUPING = "patient (sha256 of the DICOM PatientID)"
SHOWN = 5


@dataclass(frozen=True)
class DicomParams:
    """root: the folder of DICOM files. labels_csv / label_column / label_names / exclude_labels: the labels (see the
    module docstring). key: path | sop_instance_uid; key_column: its CSV column. unlabelled_files: error | ignore.
    unreadable_files: error | skip. groups: patient | none. id_from: path | sop_instance_uid. allow_outside_root: allow
    files (symlinks) that resolve outside root (see tables.checked_paths).
    date_precision: year | month | day of the study_date metadata. split_column / split_values: an official split
    in the labels CSV."""

    root: str
    labels_csv: str
    label_column: str
    label_names: dict[Any, str]
    key: str = "path"
    key_column: str | None = None
    exclude_labels: tuple[Any, ...] = ()
    unlabelled_files: str = "error"
    unreadable_files: str = "error"
    allow_outside_root: bool = False
    groups: str = "patient"
    id_from: str = "path"
    date_precision: str = "year"
    split_column: str | None = None
    split_values: dict[Any, str] = field(default_factory=dict)


def _choices(params: DicomParams) -> None:
    for key, allowed in (("key", KEYS), ("unlabelled_files", ("error", "ignore")),
                         ("unreadable_files", ("error", "skip")), ("groups", ("patient", "none")),
                         ("id_from", KEYS), ("date_precision", DATE_PRECISIONS)):
        if getattr(params, key) not in allowed:
            raise ConfigError(f"data.params.{key}: expected one of {list(allowed)}, got {getattr(params, key)!r}")


def dicom_files(root: Path, skip: tuple[Path, ...] = ()) -> list[Path]:
    """The DICOM files under ``root`` (sorted), by content or name; logs how many other files were ignored."""
    if not root.is_dir():
        raise DataError(f"{root}: DICOM folder does not exist")
    found, other = [], 0
    for path in sorted(root.rglob("*")):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(root).parts) or path in skip:
            continue
        if path.suffix.lower() in DICOM_SUFFIXES or has_dicom_magic(path):
            found.append(path)
        else:
            other += 1
    if other:
        logger.info("%s: ignored %d file(s) that are not DICOM (no DICM at byte 128, no .dcm/.dicom name)", root, other)
    if not found:
        raise DataError(f"{root}: no DICOM files found (a DICOM file has b'DICM' at byte 128 or a .dcm/.dicom name; "
                        f"{other} other file(s) ignored)")
    return found


def _headers(files: list[Path], root: Path, params: DicomParams) -> dict[str, tuple[Path, DicomHeader]]:
    """Relative posix path -> (file, header); unreadable headers raise or are skipped and counted."""
    out, skipped = {}, 0
    for path in files:
        try:
            header = read_header(path, params.date_precision)
        except DataError as exc:
            if params.unreadable_files == "error":
                raise DataError(f"{exc}; set data.params.unreadable_files: skip to leave such files out") from None
            skipped += 1
            continue
        out[path.relative_to(root).as_posix()] = (path, header)
    if skipped:
        logger.warning("%s: skipped %d file(s) whose DICOM header cannot be read (unreadable_files: skip)", root,
                       skipped)
    if not out:
        raise DataError(f"{root}: none of the {len(files)} DICOM file(s) has a readable header")
    return out


def _check_uids(headers: dict[str, tuple[Path, DicomHeader]], required: bool) -> None:
    seen: dict[str, Path] = {}
    for path, header in headers.values():
        uid = header.sop_instance_uid
        if not uid:
            if required:
                raise DataError(f"{path}: no SOPInstanceUID in the header; key/id_from sop_instance_uid needs one")
            continue
        if uid in seen:
            raise DataError(f"{seen[uid]} and {path}: the same SOPInstanceUID {uid!r}; one image stored twice would "
                            "leak across splits: remove one copy")
        seen[uid] = path


def build(params: DicomParams, data_cfg: object = None) -> Manifest:
    _choices(params)
    root = Path(params.root).expanduser().resolve()
    csv = Path(params.labels_csv).expanduser().resolve()
    label_index, class_names = _label_index(params.label_names)
    excluded = _excluded(params.exclude_labels, label_index)
    key_column = params.key_column or params.key
    table = read_table(csv)
    require_columns(table, [key_column, params.label_column, *([params.split_column] if params.split_column else [])],
                    csv)
    require_nonblank(table, key_column, csv)
    keys = [_norm_key(k, params.key) for k in table[key_column]]
    check_unique(keys, [row_ref(csv, i) for i in table.index], f"{key_column} key")
    headers = _headers(dicom_files(root, skip=(csv,)), root, params)
    _check_uids(headers, required=params.key == "sop_instance_uid" or params.id_from == "sop_instance_uid")
    by_key = headers if params.key == "path" else {h.sop_instance_uid: (p, h) for p, h in headers.values()}
    for index, key in zip(table.index, keys):
        if key not in by_key:
            raise DataError(f"{row_ref(csv, index)}: {key_column}={key!r} matches no readable DICOM file under {root} "
                            f"(keyed by {params.key})")
    unlabelled = sorted(set(by_key) - set(keys))
    if unlabelled and params.unlabelled_files == "error":
        shown = [by_key[k][0].relative_to(root).as_posix() for k in unlabelled[:SHOWN]]
        raise DataError(f"{root}: {len(unlabelled)} DICOM file(s) have no row in {csv}, e.g. {shown}; label them or "
                        "set data.params.unlabelled_files: ignore")
    if unlabelled:
        logger.info("%s: ignored %d DICOM file(s) without a row in %s (unlabelled_files: ignore)", root,
                    len(unlabelled), csv.name)
    table = table.assign(_key=keys)
    dropped = int(table[params.label_column].isin(excluded).sum())
    table = table[~table[params.label_column].isin(excluded)]
    if dropped:
        logger.info("%s: dropped %d row(s) with exclude_labels %s", csv, dropped, sorted(excluded))
    labels = _map_labels(table, params.label_column, label_index, excluded, csv)
    ids, paths, groups, metadata, refs, own = [], [], [], [], [], 0
    for index, key in zip(table.index, table["_key"]):
        path, header = by_key[key]
        rel = path.relative_to(root).as_posix()
        row_id = header.sop_instance_uid if params.id_from == "sop_instance_uid" else _strip_suffix(rel)
        ids.append(row_id)
        paths.append(str(path))
        refs.append(row_ref(csv, index))
        metadata.append(header.metadata)
        if header.group is None:
            own += 1
        groups.append(header.group or f"file-{row_id}")
    check_unique(ids, refs, "id")
    paths = checked_paths(paths, refs, ids, root, params.allow_outside_root, str(csv))
    if params.groups == "none":
        groups = None
    elif own:
        logger.warning("%s: %d file(s) have no PatientID; each is its own group", root, own)
    splits = _splits(table, params, csv) if params.split_column else None
    frame = manifest_frame(ids=ids, labels=labels.tolist(), source="dicom", paths=paths, splits=splits, groups=groups,
                           metadata=metadata)
    grouping = GROUPING if params.groups == "patient" else NO_GROUPS
    return Manifest(frame, class_names, f"dicom/{root.name}", grouping=grouping)


def _norm_key(text: str, key: str) -> str:
    text = text.strip()
    if key == "path":
        return PurePosixPath(text.replace("\\", "/")).as_posix().removeprefix("./")
    return text


def _strip_suffix(rel: str) -> str:
    path = PurePosixPath(rel)
    return str(path.with_suffix("")) if path.suffix.lower() in DICOM_SUFFIXES else rel
