"""CSV helpers shared by the CSV-based sources: read every cell as text and name rows by their line in the file.

Cells are read as text (a blank cell is "") so that nothing is converted behind the user's back: a label "1" and a
configured value 1 are compared as the text "1", and "1.0" stays different from "1".
A table's index is the 0-based data row; the row's line in the file is index + 2 (line 1 is the header).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from meddiff.errors import DataError

# Age bands of the metadata (years): CheXpert's Age, ISIC's age_approx.
AGE_BANDS = ((0, 40, "<40"), (40, 60, "40-59"), (60, 80, "60-79"), (80, 1000, "80+"))


def read_table(path: Path) -> pd.DataFrame:
    """All cells of a CSV as str, blank cells as "", index = 0-based data row."""
    if not path.is_file():
        raise DataError(f"{path}: CSV file does not exist")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({type(exc).__name__}: {exc})") from None
    return table.reset_index(drop=True)


def row_ref(path: Path, index: int) -> str:
    """Human reference of a data row: 'file line N (data row M)', both 1-based, header = line 1."""
    return f"{path} line {int(index) + 2} (data row {int(index) + 1})"


def require_columns(table: pd.DataFrame, columns: Iterable[str], path: Path) -> None:
    missing = [c for c in dict.fromkeys(columns) if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; the file has {list(table.columns)}")


def check_unique(values: Sequence[str], refs: Sequence[str], what: str) -> None:
    """DataError naming the first duplicated value and the two rows that carry it."""
    seen: dict[str, str] = {}
    for value, ref in zip(values, refs):
        if value in seen:
            raise DataError(f"duplicate {what} {value!r} at {seen[value]} and at {ref}; every {what} must be unique")
        seen[value] = ref


def check_files_exist(paths: Sequence[str], refs: Sequence[str]) -> None:
    """DataError naming the first image file that does not exist and the row that points at it."""
    for path, ref in zip(paths, refs):
        if not Path(path).is_file():
            raise DataError(f"{ref}: image file {path} does not exist; fix the path or the image root, or drop the row")


def require_nonblank(table: pd.DataFrame, column: str, path: Path) -> None:
    blank = table.index[table[column].str.strip() == ""]
    if len(blank):
        raise DataError(f"{row_ref(path, blank[0])}: column {column!r} is blank; expected a value")


def group_ids(table: pd.DataFrame, column: str, path: Path) -> list[str]:
    """The group id of every row (stripped text); a blank cell is a DataError naming its line."""
    require_columns(table, [column], path)
    require_nonblank(table, column, path)
    return table[column].str.strip().tolist()


def metadata_rows(table: pd.DataFrame, columns: Iterable[str], path: Path,
                  rename: dict[str, str] | None = None) -> list[dict[str, str]]:
    """One dict per row: column (or its ``rename``) -> stripped text, blank cells left out."""
    columns = list(dict.fromkeys(columns))
    require_columns(table, columns, path)
    rename = rename or {}
    rows = []
    for values in table[columns].itertuples(index=False, name=None):
        rows.append({rename.get(c, c): v.strip() for c, v in zip(columns, values) if v.strip()})
    return rows


def age_band(text: str, where: str) -> str | None:
    """"<40", "40-59", "60-79" or "80+" of an age in years; None for a blank cell; DataError for anything else."""
    text = text.strip()
    if not text:
        return None
    try:
        age = float(text)
    except ValueError:
        age = -1.0
    for low, high, band in AGE_BANDS:
        if low <= age < high:
            return band
    raise DataError(f"{where}: age {text!r}; expected an age in years (0-999) or blank")
