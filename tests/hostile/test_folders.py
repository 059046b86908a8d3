"""Hostile data folders and configs: paths leaving the data root, one file under two ids, forged .npz headers,
CSV dialect quirks and invalid config values. Each case is one kind of bad input and asserts the specific message."""

from __future__ import annotations

import io
import logging
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meddiff.config import DataConfig, load_config, parse_override
from meddiff.data import build_manifest
from meddiff.errors import ConfigError, DataError


def _png(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _folder(tmp_path: Path, csv_text: str | bytes, images=("a.png", "b.png", "c.png", "d.png")) -> Path:
    """tmp/data/labels.csv (the given text or bytes) and tmp/data/imgs/<images>; returns the CSV path."""
    for i, name in enumerate(images):
        _png(tmp_path / "data" / "imgs" / name, seed=i)
    csv = tmp_path / "data" / "labels.csv"
    csv.write_bytes(csv_text if isinstance(csv_text, bytes) else csv_text.encode())
    return csv


def _image_csv(csv: Path, **params):
    base = {"csv": str(csv), "label_column": "y", "label_names": {0: "neg", 1: "pos"},
            "image_root": str(csv.parent / "imgs")}
    return build_manifest(DataConfig(source="image_csv", params={**base, **params}))


GOOD_ROWS = "a.png,0\nb.png,1\nc.png,0\nd.png,1\n"


# ---------------------------------------------------------------- paths leave the data root


def _dotdot(tmp_path):
    _png(tmp_path / "secret.png")
    return "../../secret.png", tmp_path / "secret.png"


def _absolute(tmp_path):
    target = _png(tmp_path / "elsewhere" / "x.png")
    return str(target), target


def _symlink_file(tmp_path):
    target = _png(tmp_path / "elsewhere" / "x.png")
    (tmp_path / "data" / "imgs").mkdir(parents=True, exist_ok=True)
    os.symlink(target, tmp_path / "data" / "imgs" / "link.png")
    return "link.png", target


def _symlink_dir(tmp_path):
    target = _png(tmp_path / "elsewhere" / "x.png")
    (tmp_path / "data" / "imgs").mkdir(parents=True, exist_ok=True)
    os.symlink(tmp_path / "elsewhere", tmp_path / "data" / "imgs" / "sub", target_is_directory=True)
    return "sub/x.png", target


@pytest.mark.parametrize("make", [_dotdot, _absolute, _symlink_file, _symlink_dir],
                         ids=["dotdot-path", "absolute-path-outside", "symlink-file-out", "symlinked-dir-out"])
def test_image_csv_path_outside_root_is_refused_then_allowed_explicitly(tmp_path, make, caplog):
    cell, target = make(tmp_path)
    csv = _folder(tmp_path, "path,y\n" + GOOD_ROWS + f"{cell},1\n")
    root = (tmp_path / "data" / "imgs").resolve()
    with pytest.raises(DataError) as info:
        _image_csv(csv)
    message = str(info.value)
    assert f"{csv} line 6 (data row 5)" in message
    assert f"resolves to {target.resolve()}, outside the data root {root}" in message
    assert "allow_outside_root: true" in message
    # the explicit opt-in builds, with one warning carrying the count
    with caplog.at_level(logging.WARNING, logger="meddiff.data.sources.tables"):
        m = _image_csv(csv, allow_outside_root=True)
    assert str(target.resolve()) in set(m.frame["path"])
    warnings = [r.getMessage() for r in caplog.records if "outside the data root" in r.getMessage()]
    assert len(warnings) == 1 and "1 path(s)" in warnings[0]


def test_isic_image_name_with_dotdot_is_refused(tmp_path):
    images = tmp_path / "isic" / "images"
    for i in range(4):
        _png(images / f"ISIC_{i}.jpg")
    _png(tmp_path / "isic" / "stolen.jpg")
    csv = tmp_path / "isic" / "gt.csv"
    csv.write_text("image_name,target\n" + "".join(f"ISIC_{i},{i % 2}\n" for i in range(4)) + "../stolen,1\n")
    with pytest.raises(DataError, match=rf"{csv} line 6 .*path .*stolen.jpg resolves to .*outside the data root {images}"):
        build_manifest(DataConfig(source="isic_challenge", params={"csv": str(csv), "image_dir": str(images)}))


def test_chexpert_absolute_path_is_refused(tmp_path):
    root = tmp_path / "CheXpert-v1.0-small"
    outside = _png(tmp_path / "elsewhere" / "patient00009" / "view1_frontal.jpg")
    head = "Path,Frontal/Lateral,No Finding,Pleural Effusion\n"
    rows = "".join(f"CheXpert-v1.0-small/train/patient0000{i}/study1/view1_frontal.jpg,Frontal,{i % 2},{1 - i % 2}\n"
                   for i in range(4))
    for i in range(4):
        _png(root / "train" / f"patient0000{i}" / "study1" / "view1_frontal.jpg")
    (root / "train.csv").write_text(head + rows + f"{outside},Frontal,1,0\n")
    (root / "valid.csv").write_text(head)
    with pytest.raises(DataError, match=rf"train.csv line 6 .*resolves to {outside}, outside the data root {root}"):
        build_manifest(DataConfig(source="chexpert", params={"root": str(root)}))


# ---------------------------------------------------------------- one file under two ids


def _same_spelled_twice(tmp_path):
    (tmp_path / "data" / "imgs" / "sub").mkdir(parents=True, exist_ok=True)
    return "./sub/../a.png", "sub/../a"


def _symlink_and_target(tmp_path):
    (tmp_path / "data" / "imgs").mkdir(parents=True, exist_ok=True)
    os.symlink(tmp_path / "data" / "imgs" / "a.png", tmp_path / "data" / "imgs" / "alias.png")
    return "alias.png", "alias"


def _hard_link(tmp_path):
    (tmp_path / "data" / "imgs").mkdir(parents=True, exist_ok=True)
    os.link(tmp_path / "data" / "imgs" / "a.png", tmp_path / "data" / "imgs" / "copy.png")
    return "copy.png", "copy"


@pytest.mark.parametrize("make", [_same_spelled_twice, _symlink_and_target, _hard_link],
                         ids=["same-path-spelled-twice", "symlink-and-its-target", "hard-link"])
def test_same_file_under_two_ids_is_refused(tmp_path, make):
    _png(tmp_path / "data" / "imgs" / "a.png")
    cell, second_id = make(tmp_path)
    csv = _folder(tmp_path, "path,y\n" + GOOD_ROWS + f"{cell},0\n")
    with pytest.raises(DataError) as info:
        _image_csv(csv)
    message = str(info.value)
    assert "the same file appears under two ids" in message
    assert f"id 'a' at {csv} line 2 (data row 1)" in message
    assert f"id {second_id!r} at {csv} line 6 (data row 5)" in message
    assert "two splits" in message


# ---------------------------------------------------------------- forged .npz files


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def _forged_npy(shape, descr: str, data: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + data


def _npz(path: Path, **members: bytes) -> Path:
    """A MedMNIST-style .npz of 4 images per split with labels 0,1,0,1; ``members`` replace single entries."""
    good = {}
    for split in ("train", "val", "test"):
        good[f"{split}_images"] = _npy(np.zeros((4, 6, 6), np.uint8))
        good[f"{split}_labels"] = _npy(np.array([[0], [1], [0], [1]], np.uint8))
    good.update(members)
    with zipfile.ZipFile(path, "w") as archive:
        for key, data in good.items():
            archive.writestr(f"{key}.npy", data)
    return path


def _medmnist(path: Path, **params):
    return build_manifest(DataConfig(source="medmnist", params={"path": str(path), **params}))


NPZ_CASES = {
    "terabyte-header": (
        {"train_images": _forged_npy((10**7, 1000, 1000), "|u1")},
        r"key 'train_images': its header claims shape \(10000000, 1000, 1000\) of uint8 = 9.31e\+03 GiB, over the budget",
    ),
    "object-dtype": (
        {"train_labels": _npy(np.array([0, 1, 0, 1], dtype=object))},
        r"key 'train_labels' holds Python objects \(dtype object\); pickled arrays are refused",
    ),
    "float-images": (
        {"val_images": _npy(np.zeros((4, 6, 6), np.float32))},
        r"key 'val_images' has dtype float32; expected uint8 images",
    ),
    "float-labels": (
        {"test_labels": _npy(np.array([0.0, 1.0, 0.0, 1.0]))},
        r"key 'test_labels' has dtype float64; expected integer class labels",
    ),
    "size-mismatch": (
        {"train_images": _forged_npy((4, 6, 6), "|u1", b"\0" * 100)},
        r"key 'train_images': its header claims shape \(4, 6, 6\) of uint8 \(144 data bytes\) but the archive member "
        r"holds 100 data bytes; the file is truncated or forged",
    ),
    "member-not-npy": (
        {"train_images": b"this is not an npy array at all"},
        r"not a readable .npz file .*not a .npy array",
    ),
    "huge-label-value": (
        {"train_labels": _npy(np.array([0, 1, 0, 10**9], np.int64))},
        r"key 'train_labels' holds label 1000000000; .*more than 1000 classes means a corrupt file",
    ),
}


@pytest.mark.parametrize("case", list(NPZ_CASES), ids=list(NPZ_CASES))
def test_forged_npz_fails_before_allocation(tmp_path, case):
    members, message = NPZ_CASES[case]
    path = _npz(tmp_path / "forged.npz", **members)
    with pytest.raises(DataError, match=message):
        _medmnist(path)
    # the same folder with an honest file still builds
    assert len(_medmnist(_npz(tmp_path / "honest.npz"))) == 12


def test_npz_label_out_of_range_of_class_names(tmp_path):
    path = _npz(tmp_path / "f.npz", val_labels=_npy(np.array([0, 1, 2, 1], np.uint8)))
    with pytest.raises(DataError, match=r"key 'val_labels' row 2 has label 2; expected 0..1 for class_names"):
        _medmnist(path, class_names=["a", "b"])


def test_npz_duplicate_member_and_encrypted_member(tmp_path):
    path = _npz(tmp_path / "dup.npz")
    with zipfile.ZipFile(path, "a") as archive, pytest.warns(UserWarning, match="Duplicate name"):
        archive.writestr("train_labels.npy", _npy(np.array([1, 1, 1, 1], np.uint8)))
    with pytest.raises(DataError, match=r"two archive members are named 'train_labels.npy'"):
        _medmnist(path)
    path = tmp_path / "encrypted.npz"
    _npz(path)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("extra.npy", _npy(np.zeros(3, np.uint8)))
        offset = archive.getinfo("extra.npy").header_offset
    data = bytearray(path.read_bytes())  # set the "encrypted" flag bit in the local and the central header
    data[offset + 6] |= 0x1
    data[data.rfind(b"PK\x01\x02") + 8] |= 0x1
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"not a readable .npz file \(RuntimeError: File .*extra.npy.* is encrypted"):
        _medmnist(path)


def test_npz_not_a_zip(tmp_path):
    path = tmp_path / "garbage.npz"
    path.write_bytes(b"PK not really a zip file" * 10)
    with pytest.raises(DataError, match=rf"{path}: not a readable .npz file \(BadZipFile"):
        _medmnist(path)


# ---------------------------------------------------------------- CSV dialects that must work


GOOD_DIALECTS = {
    "utf8-bom": "\ufeffpath,y\n" + GOOD_ROWS,
    "semicolon": "path;y\n" + GOOD_ROWS.replace(",", ";"),
    "tab": "path\ty\n" + GOOD_ROWS.replace(",", "\t"),
    "trailing-delimiter": "path,y,\n" + GOOD_ROWS.replace("\n", ",\n"),
    "crlf-and-quoted-comma": 'path,y,note\r\n"a.png",0,"left, upper"\r\nb.png,1,x\r\nc.png,0,\r\nd.png,1,"say ""hi"""\r\n',
    "blank-lines": "\npath,y\n\na.png,0\nb.png,1\n\n\nc.png,0\nd.png,1\n\n",
}


@pytest.mark.parametrize("text", list(GOOD_DIALECTS.values()), ids=list(GOOD_DIALECTS))
def test_csv_dialects_that_work(tmp_path, text):
    m = _image_csv(_folder(tmp_path, text))
    assert sorted(m.frame["id"]) == ["a", "b", "c", "d"]
    assert m.class_counts() == {"neg": 2, "pos": 2}


def test_blank_lines_keep_true_line_numbers(tmp_path):
    # header on line 2, rows on lines 4, 5, 8 (unknown label) and 9
    csv = _folder(tmp_path, "\npath,y\n\na.png,0\nb.png,1\n\n\nc.png,7\nd.png,1\n")
    with pytest.raises(DataError, match=rf"{csv} line 8 \(data row 3\): unknown label y='7'"):
        _image_csv(csv)
    # a quoted cell spanning two lines shifts the next rows too
    csv.write_text('path,y,note\na.png,0,"two\nlines"\nb.png,1,x\nmissing.png,0,y\n')
    with pytest.raises(DataError, match=rf"{csv} line 5 \(data row 3\): image file .*missing.png does not exist"):
        _image_csv(csv)
    # rewritten without blank lines, the lines are index + 2 again (no stale record of the old file)
    csv.write_text("path,y\na.png,0\nb.png,1\nc.png,7\n")
    with pytest.raises(DataError, match=rf"{csv} line 4 \(data row 3\): unknown label y='7'"):
        _image_csv(csv)


BAD_CSVS = {
    "duplicate-columns": ("path,y,y\na.png,0,1\n", r"line 1: duplicate column name 'y' in the header"),
    "non-utf8": ("path,y\na.png,0\n".encode() + "b\u00e9.png,1\n".encode("latin-1"),
                 r"line 3: bytes b'\\xe9' are not UTF-8; re-save the file as UTF-8"),
    "header-only": ("path,y\n", r"no rows; the file has only the header line 1"),
    "empty-file": ("\n\n", r"empty CSV file"),
    "too-many-cells": ("path,y\na.png,0\nb.png,1,extra\n", r"line 3: 3 cells but the header has 2 columns"),
    "unterminated-quote": ('path,y\na.png,0\n"b.png,1\n', r"line 3: not a readable CSV row"),
    "nul-byte": ("path,y\na.png,0\nb\0.png,1\n", r"line 3: NUL byte; a CSV is text"),
    "unnamed-middle-column": ("path,,y\na.png,x,0\n", r"line 1: column 2 of the header has no name"),
}


@pytest.mark.parametrize("case", list(BAD_CSVS), ids=list(BAD_CSVS))
def test_bad_csvs_name_the_line(tmp_path, case):
    text, message = BAD_CSVS[case]
    csv = _folder(tmp_path, text)
    with pytest.raises(DataError, match=message) as info:
        _image_csv(csv)
    assert str(info.value).startswith(f"{csv}")


# ---------------------------------------------------------------- config values


BAD_CONFIGS = {
    "nan-lr": ("train:\n  lr: .nan\n", r"train.lr: expected a finite number, got nan"),
    "inf-lr": ("train:\n  lr: .inf\n", r"train.lr: expected a finite number, got inf"),
    "negative-lr": ("train:\n  lr: -0.001\n", r"train.lr: expected a finite learning rate > 0, got -0.001"),
    "zero-lr": ("train:\n  lr: 0\n", r"train.lr: expected a finite learning rate > 0, got 0.0"),
    "nan-other-float": ("score:\n  delta: .nan\n", r"score.delta: expected a finite number, got nan"),
    "bool-for-int": ("train:\n  steps: true\n", r"train.steps: expected an integer, got True"),
    "huge-seed": ("train:\n  seed: 4294967296\n", r"train.seed: expected an integer seed in 0..4294967295"),
    "negative-seed": ("data:\n  split_seed: -1\n", r"data.split_seed: expected an integer seed in 0..4294967295"),
    "date-for-string": ("name: 2024-01-31\n",
                        r"name: YAML read datetime.date\(2024, 1, 31\) as a date; no setting takes a date: quote it"),
    "date-in-source-params": ("data:\n  params:\n    where: {study_date: 2024-01-31}\n",
                              r"data.params.where.study_date: YAML read datetime.date\(2024, 1, 31\) as a date"),
    "duplicate-key": ("train:\n  steps: 10\n  lr: 0.001\n  steps: 20\n",
                      r"duplicate key 'steps' at line 2 and line 4"),
    "duplicate-section": ("train:\n  steps: 10\nscore:\n  n_draws: 5\ntrain:\n  steps: 20\n",
                          r"duplicate key 'train' at line 1 and line 5"),
    "exponent-without-dot": ("train:\n  lr: 1e-4\n", r"train.lr: expected a number, got the text '1e-4': .*write 1.0e-4"),
    "label-value-twice-in-yaml": ("data:\n  source: image_csv\n  params:\n    label_names:\n      0: neg\n      0: pos\n",
                                  r"duplicate key 0 at line 5 and line 6"),
    "unknown-key": ("train:\n  learning_rate: 0.1\n", r"train: unknown key\(s\) \['learning_rate'\]"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS), ids=list(BAD_CONFIGS))
def test_bad_config_values(tmp_path, case):
    text, message = BAD_CONFIGS[case]
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)
    # the same file without the bad line loads
    path.write_text("train:\n  steps: 10\n  lr: 0.001\n")
    assert load_config(path).train.lr == 0.001


def test_duplicate_key_in_an_override_and_direct_construction():
    with pytest.raises(ConfigError, match=r"duplicate key 'a' at line 1 and line 1"):
        parse_override("data.params={a: 1, a: 2}")
    with pytest.raises(ConfigError, match=r"data.name: YAML read datetime.date\(2024, 1, 31\) as a date"):
        parse_override("data.name=2024-01-31")
    with pytest.raises(ConfigError, match=r"data.split_seed: expected an integer seed"):
        DataConfig(split_seed=2**40)


def test_label_value_mapped_twice(tmp_path):
    csv = _folder(tmp_path, "path,y\n" + GOOD_ROWS)
    # 0 and '0' are two YAML keys but one raw value (values compare as text)
    with pytest.raises(ConfigError, match=r"label_names: raw value '0' is listed twice"):
        _image_csv(csv, label_names={0: "neg", "0": "zero", 1: "pos"})


def test_symlink_loop_names_the_row(tmp_path):
    csv = _folder(tmp_path, "path,y\n" + GOOD_ROWS + "loop.png,1\n")
    os.symlink(tmp_path / "data" / "imgs" / "loop.png", tmp_path / "data" / "imgs" / "loop.png")
    with pytest.raises(DataError, match=rf"{csv} line 6 \(data row 5\): path .*loop.png"):
        _image_csv(csv)


def test_dashboard_image_lookup_reads_the_same_csv_dialect(tmp_path):
    # results.image (the explorer's image) re-reads the CSV: a BOM ;-CSV with a trailing delimiter, blank lines and
    # CRLF builds a manifest, so the explorer must find its images too
    from meddiff.results.image import image_pixels

    csv = _folder(tmp_path, "\ufeffpath;y;\r\n\r\nimgs/a.png;0;\r\nimgs/b.png;1;\r\n")
    meta = {"checkpoint_metadata": {"config": {"data": {"source": "image_csv", "params": {"csv": str(csv)}}}}}
    expected = np.asarray(Image.open(tmp_path / "data" / "imgs" / "b.png"))
    assert (image_pixels(meta, "imgs/b") == expected).all()
