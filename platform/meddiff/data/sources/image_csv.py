"""An image folder described by a CSV manifest: one row per image file, with a label column.

Steps, in order (each dropped row is dropped on purpose, by a setting):
    1. read the CSV as text;
    2. ``where``: keep rows whose columns equal the required values (e.g. cross_class_duplicate = 0);
    3. ``exclude_labels``: drop rows with these raw label values (e.g. -1 = "neither class");
    4. map raw labels to class indices by ``label_names``; any other value is an error naming the CSV line;
    5. ``dedupe_column``: keep the first row of each group with identical content (e.g. the same md5), because the same
       image in two splits would leak test data into training;
    6. check ids are unique, every path stays under the image root (``tables.checked_paths``), every image file
       exists and no file appears under two ids.
Splits come from ``split_column`` if given; otherwise build_manifest makes a seeded stratified split (a stratified
group split when ``group_column`` names the patient / lesion column: a group never spans two splits).
``metadata_columns`` are kept per row (blank cells left out) for subgroup analysis.
``path_template`` builds the relative path from columns instead of ``path_column`` (e.g. ``'{ImageDir}/{ImageID}'``).

Finding vs no finding (PadChest, Bustos et al. 2020; VinDr-CXR, Nguyen et al. 2022), instead of label_column /
label_names: ``finding`` names class 1, ``no_finding`` class 0 ("normal" in PadChest, "No finding" in VinDr),
``findings_column`` holds the finding names of a row split at ``findings_separators`` (PadChest ``Labels`` like
"['pneumonia', 'effusion']", NIH-style "a|b"), or ``finding_columns`` are one column per finding (1 positive, 0
negative, -1 uncertain, blank; ``['*']`` = every column not used otherwise; VinDr's image_labels CSVs, CheXpert-style
CSVs); ``other_findings`` / ``uncertain`` as in ``meddiff/data/sources/findings.py``. Rows
with the same id are one image (VinDr's annotations CSV has one row per box and reader): their names are pooled per
reader (``reader_column``, e.g. ``rad_id``) and the readers combined by ``readers`` (majority / any); split, group,
path and metadata come from the image's first row. ``where`` still applies first; ``exclude_labels`` and
``dedupe_column`` belong to the label_column mode.
"""

from __future__ import annotations

import logging
import string
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from meddiff.errors import ConfigError, DataError
from meddiff.data.manifest import NO_GROUPS, SPLITS, Manifest, manifest_frame
from meddiff.data.sources import findings as F
from meddiff.data.sources.tables import (
    check_unique, checked_paths, group_ids, metadata_rows, read_table, require_columns, require_nonblank, row_ref,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageCsvParams:
    """csv: the CSV file. label_column: its raw label column.
    label_names: raw label value -> class name, in class order (two raw values may share a name to merge them).
    image_root: folder the path column is relative to (default: the CSV's folder).
    exclude_labels: raw label values to drop. where: column -> required value; other rows are dropped.
    id_column: column holding the id (default: the relative path without extension).
    split_column / split_values: official split column and raw value -> train/val/test (default: values used as is).
    dedupe_column: column whose equal values mean identical content (e.g. md5); the first row of each group is kept.
    group_column: column holding the patient / lesion id (blank cells are errors); default: no groups.
    metadata_columns: columns kept as row metadata (sex, age, view, site, ...).
    allow_outside_root: allow paths that resolve outside image_root (``..``, absolute, symlinks; see tables.py).
    All values are compared as text ("0" matches 0).
    """

    csv: str
    label_column: str | None = None
    label_names: dict[Any, str] = field(default_factory=dict)
    image_root: str | None = None
    path_column: str = "path"
    exclude_labels: tuple[Any, ...] = ()
    where: dict[str, Any] = field(default_factory=dict)
    id_column: str | None = None
    split_column: str | None = None
    split_values: dict[Any, str] = field(default_factory=dict)
    dedupe_column: str | None = None
    group_column: str | None = None
    metadata_columns: tuple[str, ...] = ()
    allow_outside_root: bool = False
    path_template: str | None = None
    finding: str | None = None
    findings_column: str | None = None
    finding_columns: tuple[str, ...] = ()
    uncertain: str = "exclude"
    findings_separators: tuple[str, ...] = ("|", ",")
    no_finding: str = "No Finding"
    other_findings: str = "exclude"
    reader_column: str | None = None
    readers: str = "majority"


def build(params: ImageCsvParams, data_cfg: object = None) -> Manifest:
    csv = Path(params.csv).expanduser().resolve()
    if params.finding is not None:
        return _build_findings(params, csv)
    if not params.label_column:
        raise ConfigError("data.params.label_column: required (the raw label column), unless `finding` and "
                          "`findings_column` describe a finding-vs-no-finding task")
    root = Path(params.image_root).expanduser().resolve() if params.image_root else csv.parent
    label_index, class_names = _label_index(params.label_names)
    excluded = _excluded(params.exclude_labels, label_index)
    table = read_table(csv)
    optional = [params.id_column, params.split_column, params.dedupe_column, params.group_column,
                *params.metadata_columns]
    require_columns(table, [*_path_columns(params), params.label_column, *params.where, *[c for c in optional if c]],
                    csv)
    table = _apply_where(table, params.where, csv)
    table = _with_template_paths(table, params, csv)
    table = table[~table[params.label_column].isin(excluded)]
    labels = _map_labels(table, params.label_column, label_index, excluded, csv)
    if params.dedupe_column:
        table, labels = _dedupe(table, labels, params.dedupe_column, csv)
    require_nonblank(table, params.path_column, csv)
    refs = [row_ref(csv, i) for i in table.index]
    ids = _ids(table, params, csv)
    check_unique(ids, refs, "id")
    paths = [str(root / p) for p in table[params.path_column]]
    paths = checked_paths(paths, refs, ids, root, params.allow_outside_root, str(csv))
    splits = _splits(table, params, csv) if params.split_column else None
    groups = group_ids(table, params.group_column, csv) if params.group_column else None
    metadata = metadata_rows(table, params.metadata_columns, csv)
    frame = manifest_frame(ids=ids, labels=labels.tolist(), source="image_csv", paths=paths, splits=splits,
                           groups=groups, metadata=metadata)
    grouping = f"{params.group_column} (column of {csv.name})" if params.group_column else NO_GROUPS
    return Manifest(frame, class_names, f"{csv.parent.name}/{csv.stem}", grouping=grouping)


def _label_index(label_names: dict[Any, str]) -> tuple[dict[str, int], tuple[str, ...]]:
    """Raw value (as text) -> class index, and the class names in order of first appearance."""
    if not label_names:
        raise ConfigError("data.params.label_names: expected a mapping raw label value -> class name, got nothing")
    class_names: list[str] = []
    index: dict[str, int] = {}
    for raw, name in label_names.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"data.params.label_names[{raw!r}]: expected a class name string, got {name!r}")
        if str(raw) in index:
            raise ConfigError(f"data.params.label_names: raw value {raw!r} is listed twice (values compare as text)")
        if name not in class_names:
            class_names.append(name)
        index[str(raw)] = class_names.index(name)
    return index, tuple(class_names)


def _excluded(exclude_labels: tuple[Any, ...], label_index: dict[str, int]) -> set[str]:
    excluded = {str(v) for v in exclude_labels}
    both = sorted(excluded & set(label_index))
    if both:
        raise ConfigError(f"data.params.exclude_labels: {both} also appear in label_names; a value is either a class or dropped")
    return excluded


def _apply_where(table: pd.DataFrame, where: dict[str, Any], csv: Path) -> pd.DataFrame:
    for column, value in where.items():
        keep = table[column] == str(value)
        if not keep.any():
            present = sorted(table[column].unique())[:10]
            raise DataError(
                f"{csv}: where {{{column}: {value!r}}} matches no row; column {column!r} holds values like {present} "
                "(values are compared as text)"
            )
        table = table[keep]
    return table


def _map_labels(table: pd.DataFrame, column: str, label_index: dict[str, int], excluded: set[str], csv: Path) -> pd.Series:
    labels = table[column].map(label_index)
    unknown = labels.index[labels.isna()]
    if len(unknown):
        value = table.at[unknown[0], column]
        raise DataError(
            f"{row_ref(csv, unknown[0])}: unknown label {column}={value!r}; expected one of label_names "
            f"{sorted(label_index)} or exclude_labels {sorted(excluded)} (values compare as text)"
        )
    return labels.astype("int64")


def _dedupe(table: pd.DataFrame, labels: pd.Series, column: str, csv: Path) -> tuple[pd.DataFrame, pd.Series]:
    """Keep the first row of each group with equal ``column``; identical content with different labels is an error."""
    require_nonblank(table, column, csv)
    first_row: dict[str, int] = {}
    keep = []
    for index, key in table[column].items():
        if key not in first_row:
            first_row[key] = index
            keep.append(index)
        elif labels[index] != labels[first_row[key]]:
            raise DataError(
                f"{row_ref(csv, first_row[key])} and {row_ref(csv, index)}: identical content ({column}={key!r}) with "
                f"different labels; this is label noise: drop these rows with `where` or fix the CSV"
            )
    dropped = len(table) - len(keep)
    if dropped:
        logger.info("%s: dropped %d row(s) whose %s duplicates an earlier row (kept the first)", csv, dropped, column)
    return table.loc[keep], labels.loc[keep]


def _ids(table: pd.DataFrame, params: ImageCsvParams, csv: Path) -> list[str]:
    if params.id_column:
        require_nonblank(table, params.id_column, csv)
        return table[params.id_column].tolist()
    # Relative path without extension: stable, readable and unique as long as the paths are.
    return [str(PurePosixPath(p).with_suffix("")) for p in table[params.path_column]]


def _splits(table: pd.DataFrame, params: ImageCsvParams, csv: Path) -> list[str]:
    mapping = {str(k): v for k, v in params.split_values.items()} or {s: s for s in SPLITS}
    wrong = sorted({v for v in mapping.values() if v not in SPLITS})
    if wrong:
        raise ConfigError(f"data.params.split_values: values must be one of {SPLITS}, got {wrong}")
    splits = table[params.split_column].map(mapping)
    unknown = splits.index[splits.isna()]
    if len(unknown):
        value = table.at[unknown[0], params.split_column]
        raise DataError(
            f"{row_ref(csv, unknown[0])}: unknown split {params.split_column}={value!r}; expected one of "
            f"{sorted(mapping)} (set split_values to map it)"
        )
    return splits.tolist()


# --- path templates and the finding-vs-no-finding mode --------------------------------------------------------------

TEMPLATE_PATH = "_template_path"


def _path_columns(params: ImageCsvParams) -> list[str]:
    """The columns the relative path is made of: the template's fields, or path_column."""
    if params.path_template is None:
        return [params.path_column]
    fields = [name for _, name, _, _ in string.Formatter().parse(params.path_template) if name]
    if not fields:
        raise ConfigError(f"data.params.path_template: {params.path_template!r} names no column; expected e.g. "
                          "'{ImageDir}/{ImageID}'")
    return fields


def _with_template_paths(table: pd.DataFrame, params: ImageCsvParams, csv: Path) -> pd.DataFrame:
    """With path_template: the path column replaced by the formatted template (params.path_column then reads it)."""
    if params.path_template is None:
        return table
    fields = _path_columns(params)
    for column in fields:
        require_nonblank(table, column, csv)
    paths = [params.path_template.format(**dict(zip(fields, values)))
             for values in table[fields].itertuples(index=False, name=None)]
    return table.assign(**{params.path_column: paths})


def _build_findings(params: ImageCsvParams, csv: Path) -> Manifest:
    if params.label_column or params.label_names or params.exclude_labels or params.dedupe_column:
        raise ConfigError("data.params: finding (finding vs no finding) replaces label_column / label_names / "
                          "exclude_labels / dedupe_column; set one mode or the other")
    if bool(params.findings_column) == bool(params.finding_columns):
        raise ConfigError("data.params: with finding, set exactly one of findings_column (the column listing a row's "
                          "findings) and finding_columns (one 1/0/-1/blank column per finding, or ['*'])")
    rule = F.FindingRule(params.finding, params.no_finding, other_findings=params.other_findings,
                         uncertain=params.uncertain, readers=params.readers)
    root = Path(params.image_root).expanduser().resolve() if params.image_root else csv.parent
    table = read_table(csv)
    optional = [params.id_column, params.split_column, params.group_column, params.reader_column,
                params.findings_column, *params.metadata_columns]
    used = [*_path_columns(params), *params.where, *[c for c in optional if c]]
    require_columns(table, used, csv)
    columns = _finding_columns(table, params, used, csv)
    table = _apply_where(table, params.where, csv)
    table = _with_template_paths(table, params, csv)
    require_nonblank(table, params.path_column, csv)
    table = table.assign(_id=_ids(table, params, csv))
    if params.reader_column:
        require_nonblank(table, params.reader_column, csv)
    if columns:
        F.check_names(rule, columns, f"{csv} (its finding columns)")
        readings = [r[0] for r in F.column_readings(table, columns, csv)]
    else:
        readings = [F.Reading(frozenset(F.split_names(cell, params.findings_separators)))
                    for cell in table[params.findings_column]]
        F.check_names(rule, [n for r in readings for n in r.positive], f"{csv} column {params.findings_column!r}")
    images: dict[str, dict[str, list[F.Reading]]] = {}  # id -> reader -> its readings (rows)
    first: dict[str, int] = {}
    for index, image_id, reading in zip(table.index, table["_id"], readings):
        reader = table.at[index, params.reader_column] if params.reader_column else ""
        images.setdefault(image_id, {}).setdefault(reader, []).append(reading)
        first.setdefault(image_id, index)
    ids = list(images)
    labels = F.labels([[_pool(rows) for rows in images[i].values()] for i in ids], rule, str(csv))
    kept = [(i, v) for i, v in zip(ids, labels) if v is not None]
    rows = table.loc[[first[i] for i, _ in kept]]
    refs = [row_ref(csv, i) for i in rows.index]
    paths = [str(root / p) for p in rows[params.path_column]]
    paths = checked_paths(paths, refs, [i for i, _ in kept], root, params.allow_outside_root, str(csv))
    splits = _splits(rows, params, csv) if params.split_column else None
    groups = group_ids(rows, params.group_column, csv) if params.group_column else None
    frame = manifest_frame(ids=[i for i, _ in kept], labels=[v for _, v in kept], source="image_csv", paths=paths,
                           splits=splits, groups=groups, metadata=metadata_rows(rows, params.metadata_columns, csv))
    grouping = f"{params.group_column} (column of {csv.name})" if params.group_column else NO_GROUPS
    return Manifest(frame, rule.class_names, f"{csv.parent.name}/{csv.stem}", grouping=grouping)


def _pool(readings: list[F.Reading]) -> F.Reading:
    """One reader's rows of one image as one reading (the union of its names; positive wins over uncertain)."""
    positive = frozenset().union(*(r.positive for r in readings))
    return F.Reading(positive, frozenset().union(*(r.uncertain for r in readings)) - positive)


def _finding_columns(table: pd.DataFrame, params: ImageCsvParams, used: list[str], csv: Path) -> list[str]:
    """The finding columns of the one-column-per-finding mode: as listed, or ["*"] = every column not used otherwise."""
    if not params.finding_columns:
        return []
    if list(params.finding_columns) == ["*"]:
        columns = [c for c in table.columns if c not in used]
        if not columns:
            raise DataError(f"{csv}: finding_columns ['*'] leaves no column; the file has {list(table.columns)}")
        return columns
    require_columns(table, params.finding_columns, csv)
    return list(params.finding_columns)
