"""MedMNIST .npz files: ``{train,val,test}_images`` [N, H, W] or [N, H, W, 3] uint8 and ``_labels`` [N] or [N, 1].

The official splits are kept. Rows point into the file (path + array key + index); pixels are read at decode time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from meddiff.errors import DataError
from meddiff.data.manifest import NO_GROUPS, SPLITS, Manifest, manifest_frame
from meddiff.data.npz import load_npz_key, npz_headers

# Class names of known single-label binary MedMNIST files, by file-name prefix (MedMNIST's own label order).
KNOWN_CLASS_NAMES = {
    "pneumoniamnist": ("normal", "pneumonia"),
    "breastmnist": ("malignant", "normal_benign"),
}
# Without class_names the classes are 0..max label: a larger label is taken for a corrupt file, not a class count.
MAX_CLASSES = 1000


@dataclass(frozen=True)
class MedMNISTParams:
    """path: the .npz file. class_names: in label order; default from KNOWN_CLASS_NAMES, else class_0, class_1, ..."""

    path: str
    class_names: tuple[str, ...] | None = None


def build(params: MedMNISTParams, data_cfg: object = None) -> Manifest:
    """Rows for every image of every split of the file."""
    path = Path(params.path).expanduser().resolve()
    headers = npz_headers(path)
    labels = {split: _split_labels(path, headers, split) for split in SPLITS}
    class_names = params.class_names or _default_class_names(path, labels)
    for split in SPLITS:
        _check_label_range(path, f"{split}_labels", labels[split], class_names)
    ids, all_labels, splits, keys, indices = [], [], [], [], []
    width = max(5, len(str(max(len(v) for v in labels.values()) - 1)))
    for split in SPLITS:
        n = len(labels[split])
        ids += [f"{path.stem}/{split}/{i:0{width}d}" for i in range(n)]
        all_labels += labels[split].tolist()
        splits += [split] * n
        keys += [f"{split}_images"] * n
        indices += list(range(n))
    frame = manifest_frame(
        ids=ids, labels=all_labels, source="medmnist", paths=[str(path)] * len(ids),
        splits=splits, array_keys=keys, array_indices=indices,
    )
    return Manifest(frame, tuple(class_names), path.stem, grouping=NO_GROUPS)


def _split_labels(path: Path, headers: dict, split: str) -> np.ndarray:
    """[N] int64 labels of one split, after checking both keys exist and their counts agree."""
    images_key, labels_key = f"{split}_images", f"{split}_labels"
    for key in (images_key, labels_key):
        if key not in headers:
            raise DataError(
                f"{path}: missing key {key!r}; a MedMNIST file holds {{train,val,test}}_images and _labels, "
                f"this one holds {sorted(headers)}"
            )
    shape, _ = headers[images_key]
    if not (len(shape) == 3 or (len(shape) == 4 and shape[-1] in (1, 3))):
        raise DataError(f"{path}: key {images_key!r} has shape {shape}; expected [N, H, W] or [N, H, W, 3]")
    labels = load_npz_key(path, labels_key)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(
            f"{path}: key {labels_key!r} has shape {labels.shape}; expected [N] or [N, 1] single-label class indices "
            "(multi-label MedMNIST sets are not supported)"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: key {labels_key!r} holds {labels.dtype} values; expected integer class indices")
    if len(labels) != shape[0]:
        raise DataError(
            f"{path}: key {images_key!r} has {shape[0]} images but {labels_key!r} has {len(labels)} labels; "
            "expected the same count"
        )
    return labels.astype(np.int64)


def _default_class_names(path: Path, labels: dict[str, np.ndarray]) -> tuple[str, ...]:
    stem = path.stem.lower()
    for prefix, names in KNOWN_CLASS_NAMES.items():
        if stem.startswith(prefix):
            return names
    top = max((int(v.max()) for v in labels.values() if len(v)), default=0)
    if top >= MAX_CLASSES:
        split = next(s for s, v in labels.items() if len(v) and int(v.max()) == top)
        raise DataError(
            f"{path}: key '{split}_labels' holds label {top}; without class_names the classes are 0..max label and "
            f"more than {MAX_CLASSES} classes means a corrupt file (set data.params.class_names if it is real)"
        )
    return tuple(f"class_{i}" for i in range(top + 1))


def _check_label_range(path: Path, key: str, labels: np.ndarray, class_names: tuple[str, ...]) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= len(class_names)))
    if len(bad):
        row = int(bad[0])
        raise DataError(
            f"{path}: key {key!r} row {row} has label {int(labels[row])}; expected 0..{len(class_names) - 1} "
            f"for class_names {list(class_names)}"
        )
