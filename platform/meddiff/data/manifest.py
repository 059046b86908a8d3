"""The manifest: one row per image, the single description of a data set that training, scoring and serving read.

A manifest row says where an image's pixels are (a file, a row of an .npz array, or a synthetic phantom), its class index
and its split. Pixels are read later by ``meddiff.data.decode.ImageDecoder``, so a manifest of 100k images is cheap to
build, hash, shard and ship to Ray workers.

Columns (``MANIFEST_COLUMNS``):
    id           str, unique and stable across runs (noise is seeded from it, results are joined on it)
    label        int class index 0..C-1 into ``Manifest.class_names``
    split        "train", "val" or "test"
    source       registry name of the source that made the row
    path         absolute path of the image file or .npz file, or a ``phantom://<seed>`` URI
    array_key    key of the array inside the .npz ("" for files and phantoms)
    array_index  row in that array, or the phantom index (-1 for files)
    group        patient / lesion / site the image belongs to (splits never divide a group); the image id itself when
                 the source has no groups (``Manifest.grouping`` says which)
    metadata     JSON object of metadata columns kept for subgroup analysis (sex, age, view, site, batch), "{}" if none
    fold         cross-validation fold (0..k-1) when ``data.cv_folds`` is set, else -1
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from meddiff.errors import ConfigError, DataError

MANIFEST_COLUMNS = ("id", "label", "split", "source", "path", "array_key", "array_index", "group", "metadata", "fold")
NO_GROUPS = "none: each image is its own group"
SPLITS = ("train", "val", "test")
# Split value a source leaves when it has no official split; build_manifest replaces it by a stratified split.
UNSPLIT = ""


@dataclass(frozen=True, eq=False)
class Manifest:
    """A table of images (``frame``, columns ``MANIFEST_COLUMNS``) with the class names its labels index."""

    frame: pd.DataFrame
    class_names: tuple[str, ...]
    name: str
    grouping: str = NO_GROUPS  # what a group is ("patient (from Path)", ...) or NO_GROUPS
    checks: dict = field(default_factory=dict)  # leakage report of build_manifest (meddiff.data.leakage), {} if none

    @property
    def has_groups(self) -> bool:
        """True when rows are grouped (patients, lesions), False when each image is its own group."""
        return self.grouping != NO_GROUPS

    def data_checks(self) -> dict:
        """What a bundle's metadata and a results meta.json record about the data beyond its fingerprint: the
        grouping, the metadata columns and the leakage report of build_manifest."""
        return {"grouping": self.grouping, "metadata_columns": sorted(self.metadata_columns()),
                "leakage": self.checks}

    def metadata_columns(self) -> dict[str, dict[str, int]]:
        """Metadata column -> {value: row count}, over all rows (values as text, sorted)."""
        counts: dict[str, dict[str, int]] = {}
        for text in self.frame["metadata"]:
            for key, value in json.loads(text).items():
                column = counts.setdefault(key, {})
                column[str(value)] = column.get(str(value), 0) + 1
        return {k: dict(sorted(v.items())) for k, v in sorted(counts.items())}

    def __len__(self) -> int:
        return len(self.frame)

    def select(self, split: str) -> Manifest:
        """The rows of one split ("train", "val", "test"); "all" returns the whole manifest."""
        if split == "all":
            return self
        if split not in SPLITS:
            raise ConfigError(f"split: expected one of {SPLITS + ('all',)}, got {split!r}")
        rows = self.frame[self.frame["split"] == split].reset_index(drop=True)
        return dataclasses.replace(self, frame=rows)

    def fingerprint(self) -> str:
        """sha256 hex of the sorted (id, label, split) triples and the class names: the training data hash.

        Independent of row order and of where the files live, so the same data set on two machines hashes the same.
        """
        triples = sorted(
            zip(self.frame["id"].astype(str), (int(v) for v in self.frame["label"]), self.frame["split"].astype(str))
        )
        payload = json.dumps({"class_names": list(self.class_names), "rows": triples}, separators=(",", ":"))
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def class_counts(self, split: str | None = None) -> dict[str, int]:
        """Number of rows per class name (every class listed, in class order), for one split or all rows."""
        frame = self.frame if split is None else self.select(split).frame
        counts = frame["label"].value_counts()
        return {name: int(counts.get(index, 0)) for index, name in enumerate(self.class_names)}

    def validate(self) -> None:
        """Check the invariants every consumer relies on; raise DataError naming the offending rows."""
        where = f"manifest {self.name!r}"
        missing = [c for c in MANIFEST_COLUMNS if c not in self.frame.columns]
        if missing:
            raise DataError(f"{where}: missing column(s) {missing}; a manifest needs {list(MANIFEST_COLUMNS)}")
        _check_class_names(self.class_names, where)
        _check_ids(self.frame, where)
        _check_labels(self.frame, self.class_names, where)
        _check_splits(self.frame, where)


def manifest_frame(
    *,
    ids: Sequence[str],
    labels: Sequence[int],
    source: str,
    paths: Sequence[str],
    splits: Sequence[str] | None = None,
    array_keys: Sequence[str] | None = None,
    array_indices: Sequence[int] | None = None,
    groups: Sequence[str] | None = None,
    metadata: Sequence[dict] | None = None,
) -> pd.DataFrame:
    """A DataFrame with exactly ``MANIFEST_COLUMNS`` and their dtypes (defaults: unsplit, files, each image its own
    group, no metadata, no fold). ``metadata``: one dict per row (column -> text), stored as JSON."""
    n = len(ids)
    frame = pd.DataFrame(
        {
            "id": pd.Series(list(ids), dtype=str),
            "label": np.asarray(labels, dtype=np.int64).reshape(n),
            "split": pd.Series(list(splits) if splits is not None else [UNSPLIT] * n, dtype=str),
            "source": pd.Series([source] * n, dtype=str),
            "path": pd.Series(list(paths), dtype=str),
            "array_key": pd.Series(list(array_keys) if array_keys is not None else [""] * n, dtype=str),
            "array_index": np.asarray(array_indices if array_indices is not None else [-1] * n, dtype=np.int64).reshape(n),
            "group": pd.Series(list(groups) if groups is not None else list(ids), dtype=str),
            "metadata": pd.Series([json.dumps(m, sort_keys=True) for m in metadata] if metadata is not None
                                  else ["{}"] * n, dtype=str),
            "fold": np.full(n, -1, dtype=np.int64),
        }
    )
    return frame


def describe_row(row: pd.Series) -> str:
    """Where a manifest row's pixels come from, for error messages: ``path[key][index]`` or ``path``."""
    if row["array_key"]:
        return f"{row['path']}[{row['array_key']!r}][{int(row['array_index'])}]"
    if int(row["array_index"]) >= 0:
        return f"{row['path']}#{int(row['array_index'])}"
    return str(row["path"])


def stratified_split(
    labels: Sequence[int] | np.ndarray, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> np.ndarray:
    """Assign "train"/"val"/"test" per row, stratified by class, seeded and deterministic.

    labels: [N] int class indices. Returns [N] object array of split names.
    Each class is shuffled by its own generator seeded from (seed, class), so adding a class never reshuffles another;
    per-class counts are the largest-remainder rounding of n * fractions (they sum to n; ties go to the earlier split).
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(f"stratified_split: labels must be one-dimensional, got shape {labels.shape}")
    _check_fractions(fractions)
    _check_seed(seed, "split seed")
    out = np.empty(len(labels), dtype=object)
    for cls in np.unique(labels):
        rows = np.flatnonzero(labels == cls)
        rows = rows[np.random.default_rng([seed, int(cls)]).permutation(len(rows))]
        bounds = np.cumsum(_allocate(len(rows), fractions))
        for name, start, stop in zip(SPLITS, np.concatenate([[0], bounds[:-1]]), bounds):
            out[rows[start:stop]] = name
    return out


def stratified_group_split(
    labels: Sequence[int] | np.ndarray, groups: Sequence[str] | np.ndarray, fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> np.ndarray:
    """Assign "train"/"val"/"test" per row so that no group is in two splits and each split's class counts are close
    to ``fractions`` of each class's count. Returns [N] object array of split names.

    Greedy, deterministic: groups are taken largest first (ties in an order shuffled by ``seed``), and each goes to the
    split where it reduces the squared distance between the split's per-class counts and their targets (fraction x class
    count) the most; a split with fraction 0 gets nothing. A mixed-label group counts toward each class it has rows of.
    scikit-learn's ``StratifiedGroupKFold`` does the same kind of greedy assignment but only for k equal folds; this
    takes any three fractions.
    """
    labels = np.asarray(labels)
    groups = np.asarray(groups).astype(str)
    if labels.ndim != 1 or groups.shape != labels.shape:
        raise DataError(f"stratified_group_split: labels and groups must be [N] arrays, got {labels.shape} and {groups.shape}")
    _check_fractions(fractions)
    _check_seed(seed, "split seed")
    classes, label_codes = np.unique(labels, return_inverse=True)
    names, group_codes = np.unique(groups, return_inverse=True)
    counts = np.zeros((len(names), len(classes)), dtype=np.int64)  # [G, C] rows per group and class
    np.add.at(counts, (group_codes, label_codes), 1)
    fractions = np.asarray(fractions, dtype=np.float64)
    target = fractions[:, None] * counts.sum(axis=0)[None, :]  # [3, C]
    shuffled = np.random.default_rng([seed, 1]).permutation(len(names))
    order = shuffled[np.argsort(-counts.sum(axis=1)[shuffled], kind="stable")]
    assigned = np.zeros((len(SPLITS), len(classes)), dtype=np.float64)
    group_split = np.empty(len(names), dtype=np.int64)
    for g in order:
        v = counts[g]
        cost = (v[None, :] * (2.0 * (assigned - target) + v[None, :])).sum(axis=1)
        cost[fractions == 0] = np.inf
        best = int(np.argmin(cost))
        group_split[g] = best
        assigned[best] += v
    return np.asarray(SPLITS, dtype=object)[group_split[group_codes]]


def group_folds(labels: Sequence[int] | np.ndarray, groups: Sequence[str] | np.ndarray, k: int, seed: int) -> np.ndarray:
    """[N] int fold 0..k-1 per row: no group in two folds, each fold's class mix close to the whole's
    (scikit-learn's ``StratifiedGroupKFold``, shuffled with ``seed``). DataError when there are fewer groups than folds."""
    from sklearn.model_selection import StratifiedGroupKFold

    labels = np.asarray(labels)
    groups = np.asarray(groups).astype(str)
    n_groups = len(np.unique(groups))
    if n_groups < k:
        raise DataError(f"cannot make {k} folds from {n_groups} group(s); use fewer folds or more data")
    _check_seed(seed, "fold seed")
    folds = np.full(len(labels), -1, dtype=np.int64)
    # StratifiedGroupKFold needs each class to have >= k members to stratify; it still keeps groups whole otherwise.
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=int(seed) % (2**32))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for fold, (_, test) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
            folds[test] = fold
    return folds


def _balance_inputs(frame: pd.DataFrame, seed: int, n_classes: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(labels, the classes present) of a frame to balance; DataError when a class of ``n_classes`` has no rows."""
    _check_seed(seed, "balance seed")
    labels = frame["label"].to_numpy()
    present = np.unique(labels)
    if n_classes is not None:
        absent = sorted(set(range(n_classes)) - {int(c) for c in present})
        if absent:
            raise DataError(f"cannot balance: class index(es) {absent} have no rows, so every class would be emptied")
    return labels, present


def balance(frame: pd.DataFrame, seed: int, n_classes: int | None = None) -> pd.DataFrame:
    """Undersample every class to the size of the smallest one (seeded); rows keep their order.

    frame: a manifest frame (needs ``label``). With ``n_classes``, a class with no rows at all is an error (balancing
    would otherwise empty the whole set).
    """
    labels, present = _balance_inputs(frame, seed, n_classes)
    if len(present) == 0:
        return frame.reset_index(drop=True)
    smallest = min(int((labels == c).sum()) for c in present)
    keep = []
    for cls in present:
        rows = np.flatnonzero(labels == cls)
        keep.append(np.random.default_rng([seed, int(cls)]).choice(rows, size=smallest, replace=False))
    return frame.iloc[np.sort(np.concatenate(keep))].reset_index(drop=True)


def balance_groups(frame: pd.DataFrame, seed: int, n_classes: int | None = None) -> pd.DataFrame:
    """Undersample whole groups (column ``group``) so that no class has more rows than the smallest class; rows keep
    their order, and a group is kept or dropped whole, so no group is split by balancing.

    Groups are visited by decreasing share of rows of the smallest class (ties in an order shuffled by ``seed``): pure
    groups of the smallest class first, then mixed groups richest in it, then the rest. A group is kept when every
    class it has rows of still has room (rows of class c kept <= rows of the smallest class). A mixed-label group counts
    toward each class it has rows of, so it is kept only when it fits in all of them. Classes end equal up to what
    indivisible groups allow (never above the smallest class's count); when most groups are mixed, the smallest
    class can stay short of the others (``meddiff data`` prints the counts).
    """
    labels, present = _balance_inputs(frame, seed, n_classes)
    if len(present) == 0:
        return frame.reset_index(drop=True)
    classes, label_codes = np.unique(labels, return_inverse=True)
    names, group_codes = np.unique(frame["group"].astype(str).to_numpy(), return_inverse=True)
    counts = np.zeros((len(names), len(classes)), dtype=np.int64)
    np.add.at(counts, (group_codes, label_codes), 1)
    per_class = counts.sum(axis=0)
    smallest = int(per_class.min())
    rarest = int(np.argmin(per_class))
    shuffled = np.random.default_rng([seed, 2]).permutation(len(names))
    share = counts[:, rarest] / counts.sum(axis=1)  # [G] fraction of each group's rows in the smallest class
    order = shuffled[np.argsort(-share[shuffled], kind="stable")]
    kept = np.zeros(len(classes), dtype=np.int64)
    keep_group = np.zeros(len(names), dtype=bool)
    for g in order:
        if np.all(kept + counts[g] <= smallest):
            keep_group[g] = True
            kept += counts[g]
    return frame.iloc[np.flatnonzero(keep_group[group_codes])].reset_index(drop=True)


def _allocate(n: int, fractions: Sequence[float]) -> np.ndarray:
    exact = np.asarray(fractions, dtype=np.float64) * n
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: n - int(counts.sum())]] += 1
    return counts


def _check_fractions(fractions: Sequence[float]) -> None:
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ConfigError(f"split fractions: expected three non-negative fractions summing to 1, got {tuple(fractions)}")


def _check_seed(seed: int, what: str) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"{what}: expected a non-negative integer, got {seed!r}")


def _check_class_names(class_names: tuple[str, ...], where: str) -> None:
    if not class_names or not all(isinstance(n, str) and n for n in class_names):
        raise DataError(f"{where}: class_names must be non-empty strings, got {class_names!r}")
    if len(set(class_names)) != len(class_names):
        raise DataError(f"{where}: class_names must be unique, got {class_names!r}")


def _check_ids(frame: pd.DataFrame, where: str) -> None:
    ids = frame["id"]
    blank = frame[ids.isna() | (ids.astype(str) == "")]
    if len(blank):
        raise DataError(f"{where}: row {describe_row(blank.iloc[0])} has an empty id")
    dup = ids[ids.duplicated(keep=False)]
    if len(dup):
        first = dup.iloc[0]
        rows = frame[ids == first]
        raise DataError(
            f"{where}: duplicate id {first!r} for {describe_row(rows.iloc[0])} and {describe_row(rows.iloc[1])}; "
            "ids must be unique (results are joined and noise is seeded on them)"
        )


def _check_labels(frame: pd.DataFrame, class_names: tuple[str, ...], where: str) -> None:
    n_classes = len(class_names)
    if not pd.api.types.is_integer_dtype(frame["label"]):
        raise DataError(f"{where}: column 'label' must hold integer class indices, got dtype {frame['label'].dtype}")
    bad = frame[(frame["label"] < 0) | (frame["label"] >= n_classes)]
    if len(bad):
        row = bad.iloc[0]
        raise DataError(
            f"{where}: id {row['id']!r} ({describe_row(row)}) has label {int(row['label'])}, "
            f"expected 0..{n_classes - 1} for classes {list(class_names)}"
        )


def _check_splits(frame: pd.DataFrame, where: str) -> None:
    bad = frame[~frame["split"].isin(SPLITS)]
    if len(bad):
        row = bad.iloc[0]
        raise DataError(f"{where}: id {row['id']!r} has split {row['split']!r}, expected one of {SPLITS}")
