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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from meddiff.errors import ConfigError, DataError
from meddiff.data.manifest import NO_GROUPS, SPLITS, Manifest, manifest_frame
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
    label_column: str
    label_names: dict[Any, str]
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


def build(params: ImageCsvParams, data_cfg: object = None) -> Manifest:
    csv = Path(params.csv).expanduser().resolve()
    root = Path(params.image_root).expanduser().resolve() if params.image_root else csv.parent
    label_index, class_names = _label_index(params.label_names)
    excluded = _excluded(params.exclude_labels, label_index)
    table = read_table(csv)
    optional = [params.id_column, params.split_column, params.dedupe_column, params.group_column,
                *params.metadata_columns]
    require_columns(table, [params.path_column, params.label_column, *params.where, *[c for c in optional if c]], csv)
    table = _apply_where(table, params.where, csv)
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
