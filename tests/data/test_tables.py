"""tables.read_table / row_ref / checked_paths on well-formed input: what the sources see after reading a CSV."""

from __future__ import annotations

import os

import pytest

from meddiff.data.sources.tables import check_distinct_files, read_table, resolve_under_root, row_ref
from meddiff.errors import DataError


def test_bom_semicolon_crlf_quotes_and_trailing_delimiter(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_bytes('\ufeffpath;note;\r\na.png;"left; upper";\r\n"b.png";"say ""hi""";\r\n'.encode())
    table = read_table(csv)
    assert list(table.columns) == ["path", "note"]  # no BOM in the first name, the empty last column dropped
    assert table.to_dict("list") == {"path": ["a.png", "b.png"], "note": ["left; upper", 'say "hi"']}
    assert list(table.index) == [0, 1]


def test_explicit_delimiter_and_short_rows_padded(tmp_path):
    csv = tmp_path / "t.txt"
    csv.write_text("path|y|site\na.png|1\nb.png|0|arm\n")
    table = read_table(csv, delimiter="|")
    assert table.to_dict("list") == {"path": ["a.png", "b.png"], "y": ["1", "0"], "site": ["", "arm"]}


def test_a_single_column_file_is_comma_separated(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("path\na.png\nb.png\n")
    assert read_table(csv)["path"].tolist() == ["a.png", "b.png"]


def test_row_ref_names_true_lines_after_blank_lines_and_multiline_cells(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text('\npath,note\n\na.png,"one\ntwo"\n\nb.png,x\n')
    table = read_table(csv)
    assert [row_ref(csv, i) for i in table.index] == [f"{csv} line 4 (data row 1)", f"{csv} line 7 (data row 2)"]
    csv.write_text("path,note\na.png,x\nb.png,y\n")
    table = read_table(csv)
    assert [row_ref(csv, i) for i in table.index] == [f"{csv} line 2 (data row 1)", f"{csv} line 3 (data row 2)"]


def test_header_only_allowed_when_asked(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("path,y\n")
    assert read_table(csv, allow_no_rows=True).empty
    with pytest.raises(DataError, match="no rows"):
        read_table(csv)


def test_resolve_under_root_keeps_inside_symlinks_and_normalises(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.png").write_bytes(b"x")
    os.symlink(root / "sub", root / "alias")
    paths = [str(root / "sub" / ".." / "sub" / "a.png"), str(root / "alias" / "a.png")]
    resolved = resolve_under_root(paths, ["r1", "r2"], root, allow_outside=False)
    assert resolved == [str((root / "sub" / "a.png").resolve())] * 2
    # ... but those two rows are one file under two ids
    with pytest.raises(DataError, match=r"id 'x' at r1 .* and id 'y' at r2"):
        check_distinct_files(resolved, ["r1", "r2"], ["x", "y"])


def test_distinct_files_pass(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).write_bytes(name.encode())
    check_distinct_files([str(tmp_path / "a"), str(tmp_path / "b")], ["r1", "r2"], ["a", "b"])
