"""Reading arrays out of .npz files: headers without loading (manifest time), whole arrays cached (decode time).

Every member's .npy header is checked before anything is allocated (``check_header``): a real .npy (magic, version
1.0 or 2.0), no object (pickled) dtype, ``*_images`` uint8 and ``*_labels`` integer, shape x itemsize within a budget
(``IMAGES_BUDGET_BYTES``, ``LABELS_BUDGET_BYTES``, ``OTHER_BUDGET_BYTES``), and the archive member's uncompressed size
equal to header + data. So a forged header claiming terabytes fails at once, with a message, instead of an allocation.
"""

from __future__ import annotations

import functools
import zipfile
from pathlib import Path

import numpy as np

from meddiff.errors import DataError

GIB = 1 << 30
IMAGES_BUDGET_BYTES = 2 * GIB  # one ``*_images`` array (MedMNIST+ 224 px train split: ~1.1 GiB grayscale)
LABELS_BUDGET_BYTES = 64 << 20  # one ``*_labels`` array
OTHER_BUDGET_BYTES = 2 * GIB  # any other array


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
                    key = info.filename[: -len(".npy")]
                    if key in headers:
                        raise DataError(f"{path}: two archive members are named {info.filename!r}; numpy would read "
                                        "only one of them: the file is damaged or forged")
                    with archive.open(info) as member:
                        shape, dtype, header_size = _read_header(member)
                    check_header(path, key, shape, dtype, header_size, info.file_size)
                    headers[key] = (shape, dtype)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, RuntimeError, NotImplementedError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    return headers


def load_npz_key(path: str | Path, key: str) -> np.ndarray:
    """The array ``key`` of an .npz, loaded fully (no pickles). DataError naming the file and key if it is missing."""
    path = Path(path)
    headers = npz_headers(path)  # checks every header before anything is loaded
    if key not in headers:
        raise DataError(f"{path}: missing key {key!r}; the file holds {sorted(headers)}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if key not in archive.files:
                raise DataError(f"{path}: missing key {key!r}; the file holds {sorted(archive.files)}")
            return archive[key]
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, RuntimeError, NotImplementedError) as exc:
        raise DataError(f"{path}: cannot read key {key!r} ({type(exc).__name__}: {exc})") from None


@functools.lru_cache(maxsize=8)
def cached_npz_key(path: str, key: str) -> np.ndarray:
    """``load_npz_key`` memoised per process, keyed by (path, key): decoding must not reload a file per image.

    The array is marked read-only because every caller shares it.
    """
    array = load_npz_key(path, key)
    array.setflags(write=False)
    return array


def check_header(path: Path, key: str, shape: tuple[int, ...], dtype: np.dtype, header_size: int,
                 member_size: int) -> None:
    """DataError unless the array ``key`` described by its .npy header may be loaded (see the module docstring).

    header_size: bytes of the .npy magic + header; member_size: the zip member's uncompressed size (ZipInfo.file_size).
    """
    where = f"{path}: key {key!r}"
    if dtype.hasobject:
        raise DataError(f"{where} holds Python objects (dtype {dtype}); pickled arrays are refused, expected numbers")
    if key.endswith("_images"):
        allowed, budget, expected = (dtype == np.uint8), IMAGES_BUDGET_BYTES, "uint8 images"
    elif key.endswith("_labels"):
        allowed, budget, expected = (dtype.kind in "iu"), LABELS_BUDGET_BYTES, "integer class labels"
    else:
        allowed, budget, expected = (dtype.kind in "biuf"), OTHER_BUDGET_BYTES, "a numeric array"
    if not allowed:
        raise DataError(f"{where} has dtype {dtype}; expected {expected}")
    if any(n < 0 for n in shape):
        raise DataError(f"{where} has shape {shape}; negative dimensions are impossible")
    nbytes = dtype.itemsize
    for n in shape:
        nbytes *= int(n)  # Python ints: no overflow
    if nbytes > budget:
        raise DataError(
            f"{where}: its header claims shape {shape} of {dtype} = {nbytes / GIB:.3g} GiB, over the budget of "
            f"{budget / GIB:.3g} GiB for one array (meddiff.data.npz); refusing to allocate it"
        )
    if header_size + nbytes != member_size:
        raise DataError(
            f"{where}: its header claims shape {shape} of {dtype} ({nbytes} data bytes) but the archive member holds "
            f"{member_size - header_size} data bytes; the file is truncated or forged"
        )


def _read_header(member) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, header bytes) of a .npy stream; DataError-worthy ValueError for anything that is not .npy."""
    try:
        version = np.lib.format.read_magic(member)
    except ValueError as exc:
        raise ValueError(f"a member is not a .npy array ({exc})") from None
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    return tuple(int(n) for n in shape), np.dtype(dtype), member.tell()


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"{path}: .npz file does not exist; expected a MedMNIST-style .npz at this path")
