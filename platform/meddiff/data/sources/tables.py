"""CSV helpers shared by the CSV-based sources: read every cell as text and name rows by their line in the file.

Cells are read as text (a blank cell is "") so that nothing is converted behind the user's back: a label "1" and a
configured value 1 are compared as the text "1", and "1.0" stays different from "1".
A table's index is the 0-based data row. Errors name a row by its true line in the file (``row_ref``): blank lines
are skipped and quoted cells may span lines, so ``read_table`` records each data row's first line per file (read by
``row_ref``; without blank lines or multi-line cells the line is simply index + 2). Not in ``table.attrs``: pandas
deep-copies attrs on every operation, which would cost a copy of 200k line numbers per column access on CheXpert.

Dialect: UTF-8 with or without BOM, delimiter ``,``, ``;``, tab or ``|`` (the one that splits the header line into
the most columns, unless given), CRLF or LF line ends, quoted cells with delimiters or line breaks, blank lines
skipped, an empty unnamed last column (trailing delimiter) dropped. Refused with a DataError naming the line: bytes that
are not UTF-8, duplicate column names, a row with more cells than the header, a header-only or empty file.

Paths taken from a CSV go through ``checked_paths``: resolved (symlinks followed), kept under the source's data root
unless ``allow_outside_root`` is set, required to exist, and one file may not appear under two ids.
"""

from __future__ import annotations

import csv as csvlib
import gzip
import io
import logging
import os
import zlib
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from meddiff.data.demographics import AGE_BANDS
from meddiff.errors import DataError

logger = logging.getLogger(__name__)

DELIMITERS = (",", ";", "\t", "|")
# path (as given to read_table) -> file line of every data row, for the files whose lines are not simply index + 2.
_LINES: dict[str, tuple[int, ...]] = {}


def read_table(path: Path, delimiter: str | None = None, allow_no_rows: bool = False) -> pd.DataFrame:
    """All cells of a CSV as str, blank cells as "", index = 0-based data row (see the module docstring).

    delimiter: None sniffs it from the header line. allow_no_rows: a header-only file gives an empty table instead of
    a DataError (for a source that pools several CSVs, one of which may be empty)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: CSV file does not exist")
    text = _decode(path)
    if "\0" in text:
        line = text[: text.index("\0")].count("\n") + 1
        raise DataError(f"{path} line {line}: NUL byte; a CSV is text (is this file binary or UTF-16?), re-save it as "
                        "UTF-8 text")
    header_line = next((line.rstrip("\r\n") for line in io.StringIO(text, newline="") if line.strip()), None)
    if header_line is None:
        raise DataError(f"{path}: empty CSV file; expected a header line and at least one data row")
    if delimiter is None:
        delimiter = max(DELIMITERS, key=lambda d: (len(next(csvlib.reader([header_line], delimiter=d))), d == ","))
    reader = csvlib.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    records: list[tuple[int, list[str]]] = []
    previous = 0
    try:
        for cells in reader:
            first_line, previous = previous + 1, reader.line_num
            if not cells or not "".join(cells).strip():
                continue  # a blank line (or one of delimiters only)
            records.append((first_line, cells))
    except csvlib.Error as exc:
        raise DataError(f"{path} line {previous + 1}: not a readable CSV row ({exc})") from None
    (header_at, header), rows = records[0], records[1:]
    trailing = len(header) > 1 and not header[-1].strip()
    if trailing:
        header = header[:-1]
    _check_header(header, path, header_at)
    if not rows and not allow_no_rows:
        raise DataError(f"{path}: no rows; the file has only the header line {header_at} ({header})")
    width = len(header)
    data = []
    for line, cells in rows:
        if trailing and len(cells) == width + 1 and not cells[-1].strip():
            cells = cells[:-1]
        if len(cells) > width:
            raise DataError(f"{path} line {line}: {len(cells)} cells but the header has {width} columns {header}; "
                            f"check the delimiter {delimiter!r} and quoting")
        data.append(cells if len(cells) == width else cells + [""] * (width - len(cells)))
    table = pd.DataFrame(data, columns=header, dtype=str)
    line_numbers = tuple(line for line, _ in rows)
    if line_numbers != tuple(range(2, len(rows) + 2)):
        _LINES[str(path)] = line_numbers
    else:
        _LINES.pop(str(path), None)
    return table


def _decode(path: Path) -> str:
    raw = path.read_bytes()
    if raw.startswith(b"\x1f\x8b"):  # gzip (MIMIC-CXR ships its tables as .csv.gz)
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: a gzip file that cannot be decompressed ({exc}); expected a complete .csv.gz") from None
    raw = raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path} line {line}: bytes {raw[exc.start:exc.end]!r} are not UTF-8; re-save the file as UTF-8 "
            "(e.g. in Excel: 'CSV UTF-8')"
        ) from None


def _check_header(header: list[str], path: Path, line: int) -> None:
    seen: set[str] = set()
    for i, name in enumerate(header):
        if not name:
            raise DataError(f"{path} line {line}: column {i + 1} of the header has no name; every column needs one")
        if name in seen:
            raise DataError(f"{path} line {line}: duplicate column name {name!r} in the header {header}; "
                            "column names must be unique")
        seen.add(name)


def row_ref(path: Path, index: int) -> str:
    """Human reference of a data row: 'file line N (data row M)', both 1-based; N is the row's true line in the file."""
    lines = _LINES.get(str(path))
    line = lines[int(index)] if lines is not None and int(index) < len(lines) else int(index) + 2
    return f"{path} line {line} (data row {int(index) + 1})"


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


def checked_paths(paths: Sequence[str], refs: Sequence[str], ids: Sequence[str], root: Path, allow_outside: bool,
                  where: str) -> list[str]:
    """The resolved image paths of a source's rows, after every check on files named by a CSV.

    paths: each row's path as built from the CSV (root joined with the cell); refs: each row's ``row_ref``; ids: each
    row's id; root: the source's data root; allow_outside: the source's ``allow_outside_root``; where: the CSV (for the
    log line). Returns ``resolve_under_root`` of the paths, after ``check_files_exist`` and ``check_distinct_files``.
    """
    resolved = resolve_under_root(paths, refs, root, allow_outside, where)
    check_files_exist(resolved, refs)
    check_distinct_files(resolved, refs, ids)
    return resolved


def resolve_under_root(paths: Sequence[str], refs: Sequence[str], root: Path, allow_outside: bool,
                       where: str = "") -> list[str]:
    """Every path resolved (``Path.resolve``: ``..`` removed, symlinks followed); one that leaves ``root`` is a
    DataError naming its row, the path and the root, unless ``allow_outside`` (then logged once, with the count).

    Why: a CSV row such as ``../../etc/passwd``, ``/abs/elsewhere.png`` or a symlink pointing out of the data folder
    would read files the data root does not hold (and that a shared-data permission model does not expect).
    """
    root = Path(root).expanduser().resolve()
    out, outside = [], 0
    for path, ref in zip(paths, refs):
        try:
            resolved = Path(path).expanduser().resolve()
        except (OSError, ValueError, RuntimeError) as exc:  # NUL in the path, a symlink loop, ...
            raise DataError(f"{ref}: path {path!r} cannot be resolved ({type(exc).__name__}: {exc})") from None
        if not resolved.is_relative_to(root):
            if not allow_outside:
                raise DataError(
                    f"{ref}: path {path} resolves to {resolved}, outside the data root {root} (via '..', an absolute "
                    "path or a symlink); move the file under the root, or set allow_outside_root: true in "
                    "data.params to allow it explicitly"
                )
            outside += 1
        out.append(str(resolved))
    if outside:
        logger.warning("%s: %d path(s) resolve outside the data root %s; allowed by allow_outside_root: true",
                       where or root, outside, root)
    return out


def check_distinct_files(paths: Sequence[str], refs: Sequence[str], ids: Sequence[str]) -> None:
    """DataError when one file (same ``os.stat`` device and inode: the same path spelled twice, a symlink and its
    target, or a hard link) appears under two ids: it could land in two splits and leak test images into training."""
    seen: dict[tuple[int, int], tuple[str, str, str]] = {}
    for path, ref, id_ in zip(paths, refs, ids):
        stat = os.stat(path)
        key = (stat.st_dev, stat.st_ino)
        if key in seen:
            first_id, first_ref, first_path = seen[key]
            raise DataError(
                f"the same file appears under two ids: id {first_id!r} at {first_ref} ({first_path}) and id {id_!r} at "
                f"{ref} ({path}); it could land in two splits: keep one row"
            )
        seen[key] = (str(id_), ref, path)


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
