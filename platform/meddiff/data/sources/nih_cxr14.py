"""NIH ChestX-ray14 (Wang et al. 2017): one finding vs no finding, grouped by patient, with the official split.

``root`` holds ``Data_Entry_2017.csv`` (``csv``; columns ``Image Index``, ``Finding Labels``, ``Patient ID``, and for
metadata ``Patient Age``, ``Patient Gender``, ``View Position``), the images in folders matching ``image_dirs``
(default ``images*``: ``images/`` or the ``images_001/images/`` ... of the Kaggle copy; searched recursively for the
file named by ``Image Index``), and ``train_val_list.txt`` / ``test_list.txt``.

Labels: ``Finding Labels`` is ``A|B`` or ``No Finding``; ``finding`` (e.g. "Effusion") is class 1, "No Finding" class 0,
other findings by ``other_findings`` (``meddiff/data/sources/findings.py``). ``views``: keep only these
``View Position`` values (e.g. [PA, AP]; default all). Images named in the CSV but absent from disk:
``missing_images: error`` (default) or ``skip`` (counted).

Split: ``official_split: true`` (default) puts the images of ``test_list.txt`` in test and splits those of
``train_val_list.txt`` into train and val by patient (a stratified group split with ``data.split_seed``; the val share
is val / (train + val) of ``data.split_fractions``); an image in both lists, in neither, or a list naming an image the
CSV does not have is an error. ``official_split: false`` leaves the split to build_manifest (by patient).
Groups: ``Patient ID``. Metadata: sex, age ("90+" above 89), age_band, view.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from meddiff.data.demographics import age_columns, parse_age_years, sex_code
from meddiff.data.manifest import UNSPLIT, Manifest, manifest_frame, stratified_group_split
from meddiff.data.sources import findings as F
from meddiff.data.sources.tables import check_unique, checked_paths, read_table, require_columns, require_nonblank, row_ref
from meddiff.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

COLUMNS = ("Image Index", "Finding Labels", "Patient ID")
SPLIT_FILES = {"train_val_list.txt": "train_val", "test_list.txt": "test"}
NO_FINDING = "No Finding"


@dataclass(frozen=True)
class NihCxr14Params:
    """root: the dataset folder. finding: class 1 (e.g. Effusion). other_findings: exclude | negative.
    views: View Position values kept (default all). official_split: use the official lists. image_dirs: glob patterns
    under root searched for the images. csv: the data entry CSV under root. missing_images: error | skip."""

    root: str
    finding: str
    other_findings: str = "exclude"
    views: tuple[str, ...] = ()
    official_split: bool = True
    image_dirs: tuple[str, ...] = ("images*",)
    csv: str = "Data_Entry_2017.csv"
    missing_images: str = "error"
    allow_outside_root: bool = False


def image_index(root: Path, patterns: tuple[str, ...]) -> dict[str, Path]:
    """File name -> path of every file under the folders of ``root`` matching ``patterns`` (searched recursively)."""
    folders = sorted({p for pattern in patterns for p in root.glob(pattern) if p.is_dir()})
    if not folders:
        raise DataError(f"{root}: no image folder matches image_dirs {list(patterns)}")
    index: dict[str, Path] = {}
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                index.setdefault(path.name, path)
    return index


def keep_present(names: list[str], index: dict[str, Path], refs: list[str], policy: str, where: str) -> np.ndarray:
    """[N] bool: the images found on disk; a missing one is an error (``policy`` "error") or dropped and counted."""
    if policy not in ("error", "skip"):
        raise ConfigError(f"data.params.missing_images: expected one of ['error', 'skip'], got {policy!r}")
    present = np.array([n in index for n in names], dtype=bool)
    if not present.all():
        first = int(np.flatnonzero(~present)[0])
        if policy == "error":
            raise DataError(f"{refs[first]}: image {names[first]!r} not found under {where}; fix image_dirs or set "
                            "data.params.missing_images: skip")
        logger.warning("%s: %d labelled image(s) not found on disk, skipped (missing_images: skip)", where,
                       int((~present).sum()))
    return present


def metadata(age: str, sex: str, view: str, where: str) -> dict[str, str]:
    """sex / age / age_band / view columns of one row; DataError naming ``where`` for an age that is not a number."""
    try:
        years = parse_age_years(age)
    except ValueError:
        raise DataError(f"{where}: malformed age {age!r}; expected an age in years (0-150) or blank") from None
    meta = age_columns(years)
    if sex_code(sex):
        meta["sex"] = sex_code(sex)
    if view.strip():
        meta["view"] = view.strip()
    return meta


def val_by_group(labels: np.ndarray, groups: np.ndarray, data_cfg: object) -> np.ndarray:
    """Split official train+val rows into "train"/"val" by group, seeded by ``data.split_seed``."""
    train, val, _ = getattr(data_cfg, "split_fractions", (0.8, 0.1, 0.1))
    share = val / (train + val) if train + val > 0 else 0.0
    return stratified_group_split(labels, groups, (1.0 - share, share, 0.0), getattr(data_cfg, "split_seed", 0))


def build(params: NihCxr14Params, data_cfg: object = None) -> Manifest:
    rule = F.FindingRule(params.finding, NO_FINDING, other_findings=params.other_findings)
    root = Path(params.root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"{root}: NIH ChestX-ray14 root folder does not exist")
    csv = root / params.csv
    table = read_table(csv)
    require_columns(table, [*COLUMNS, *(["View Position"] if params.views else [])], csv)
    for column in COLUMNS:
        require_nonblank(table, column, csv)
    check_unique(table["Image Index"].tolist(), [row_ref(csv, i) for i in table.index], "Image Index")
    all_names = set(table["Image Index"])
    if params.views:
        keep = table["View Position"].str.strip().isin(params.views)
        logger.info("%s: kept %d of %d row(s) with View Position in %s", csv, int(keep.sum()), len(table),
                    list(params.views))
        table = table[keep]
    readings = [[F.Reading(frozenset(F.split_names(cell, ("|",))))] for cell in table["Finding Labels"]]
    F.check_names(rule, [n for r in readings for n in r[0].positive], str(csv))
    labels = F.labels(readings, rule, str(csv))
    kept = np.array([v is not None for v in labels], dtype=bool)
    table, labels = table[kept], np.array([v for v in labels if v is not None], dtype=np.int64)
    refs = [row_ref(csv, i) for i in table.index]
    names = table["Image Index"].tolist()
    index = image_index(root, params.image_dirs)
    present = keep_present(names, index, refs, params.missing_images, f"{root} {list(params.image_dirs)}")
    table, labels = table[present], labels[present]
    refs = [row_ref(csv, i) for i in table.index]
    names = table["Image Index"].tolist()
    groups = table["Patient ID"].str.strip().to_numpy().astype(str)
    get = lambda column: table[column].tolist() if column in table.columns else [""] * len(table)  # noqa: E731
    meta = [metadata(a, s, v, ref) for a, s, v, ref in zip(get("Patient Age"), get("Patient Gender"),
                                                            get("View Position"), refs)]
    splits = _official(root, names, labels, groups, all_names, data_cfg) if params.official_split else None
    ids = [Path(n).stem for n in names]
    paths = checked_paths([str(index[n]) for n in names], refs, ids, root, params.allow_outside_root, str(csv))
    frame = manifest_frame(ids=ids, labels=labels.tolist(), source="nih_cxr14", paths=paths, splits=splits, groups=groups.tolist(),
                           metadata=meta)
    return Manifest(frame, rule.class_names, f"nih_cxr14/{rule.class_names[1]}", grouping="patient (Patient ID)")


def read_list(path: Path, known: set[str]) -> list[str]:
    """The image names of an official split list, one per line; a name the CSV lacks is an error naming the line."""
    if not path.is_file():
        raise DataError(f"{path}: official split list does not exist (set data.params.official_split: false to "
                        "split by patient here)")
    names = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        if name not in known:
            raise DataError(f"{path} line {number}: {name!r} is not an Image Index of the data entry CSV")
        names.append(name)
    return names


def _official(root: Path, names: list[str], labels: np.ndarray, groups: np.ndarray, known: set[str],
              data_cfg: object) -> list[str]:
    part: dict[str, str] = {}
    for file, which in SPLIT_FILES.items():
        for name in read_list(root / file, known):
            if part.setdefault(name, which) != which:
                raise DataError(f"{root}: {name!r} is in both train_val_list.txt and test_list.txt")
    missing = [n for n in names if n not in part]
    if missing:
        raise DataError(f"{root}: {len(missing)} image(s) are in neither train_val_list.txt nor test_list.txt, e.g. "
                        f"{missing[:5]}")
    split = np.array([part[n] for n in names], dtype=object)
    rest = np.flatnonzero(split == "train_val")
    split[split == "train_val"] = UNSPLIT
    if len(rest):
        split[rest] = val_by_group(labels[rest], groups[rest], data_cfg)
    return split.tolist()
