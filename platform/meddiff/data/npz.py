"""Reading arrays out of .npz files: headers without loading (manifest time), whole arrays cached (decode time)."""

from __future__ import annotations

import functools
import zipfile
from pathlib import Path

import numpy as np

from meddiff.errors import DataError


def npz_headers(path: str | Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{key: (shape, dtype)} of every array in an .npz, read from the .npy headers without loading the data.

    Why: a MedMNIST+ 224 px file holds gigabytes of images; building a manifest only needs their counts.
    """
    path = Path(path)
    _require_file(path)
    headers = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.filename.endswith(".npy"):
                    with archive.open(info) as member:
                        headers[info.filename[: -len(".npy")]] = _read_header(member)
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    return headers


def load_npz_key(path: str | Path, key: str) -> np.ndarray:
    """The array ``key`` of an .npz, loaded fully (no pickles). DataError naming the file and key if it is missing."""
    path = Path(path)
    _require_file(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            if key not in archive.files:
                raise DataError(f"{path}: missing key {key!r}; the file holds {sorted(archive.files)}")
            return archive[key]
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read key {key!r} ({type(exc).__name__}: {exc})") from None


@functools.lru_cache(maxsize=8)
def cached_npz_key(path: str, key: str) -> np.ndarray:
    """``load_npz_key`` memoised per process, keyed by (path, key): decoding must not reload a file per image.

    The array is marked read-only because every caller shares it.
    """
    array = load_npz_key(path, key)
    array.setflags(write=False)
    return array


def _read_header(member) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    return tuple(int(n) for n in shape), np.dtype(dtype)


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"{path}: .npz file does not exist; expected a MedMNIST-style .npz at this path")
