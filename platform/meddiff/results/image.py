"""One scored image of a results set as frames: its row, its votes (or softmax) per class, its per-draw errors and
how the vote share settles as draws are added; and its pixels for display (``image_pixels``), found from the data
config the run's checkpoint recorded (meta.json ``checkpoint_metadata.config.data``)."""

from __future__ import annotations

import functools
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import numpy as np
import pandas as pd

from meddiff.config import DEFAULT_MAX_PIXELS, IMAGE_FORMATS
from meddiff.errors import DataError, ResultsError
from meddiff.results import schema as S

def image_row(df: pd.DataFrame, image_id: str) -> pd.Series:
    rows = df[df[S.IMAGE_ID] == image_id]
    if rows.empty:
        raise ResultsError(f"image {image_id!r} is not in this results set")
    return rows.iloc[0]


def votes_frame(row: pd.Series, class_names: Sequence[str]) -> pd.DataFrame:
    """Per class: votes, vote share (or softmax for a baseline) and mean error over draws."""
    names = _names(row, class_names)
    out = pd.DataFrame({"class": names})
    if row[S.VOTES] is not None:
        out["votes"] = [int(v) for v in row[S.VOTES]]
    if row[S.PROB] is not None:
        out["share" if row[S.VOTES] is not None else "softmax"] = list(row[S.PROB])
    if row[S.MEAN_ERROR] is not None:
        out["mean error"] = list(row[S.MEAN_ERROR])
    return out


def draws_frame(row: pd.Series, class_names: Sequence[str]) -> pd.DataFrame | None:
    """Per draw k and class: t, the error, whether that class won draw k (its vote). None when the run did not store
    per-draw errors (``score.store_draws: false``) or is a baseline."""
    errors, t = row[S.DRAW_ERRORS], row[S.DRAW_T]
    if errors is None or t is None:
        return None
    e = np.stack([np.asarray(x, dtype=np.float64) for x in errors])  # [C, N]
    names = _names(row, class_names)
    winner = e.argmin(axis=0)
    n = e.shape[1]
    return pd.DataFrame({
        "draw": np.tile(np.arange(1, n + 1), len(names)),
        "class": np.repeat(names, n),
        "t": np.tile(np.asarray(t, dtype=np.float64), len(names)),
        "error": e.reshape(-1),
        "vote": np.concatenate([winner == c for c in range(len(names))]),
    })


def vote_share_over_draws(draws: pd.DataFrame) -> pd.DataFrame:
    """Running vote share of every class after the first k draws (k = 1..N): how the vote settles as N grows."""
    wide = draws.pivot(index="draw", columns="class", values="vote").astype(float)
    share = wide.cumsum().div(np.arange(1, len(wide) + 1), axis=0)
    return share.reset_index().melt(id_vars="draw", var_name="class", value_name="share")


def _names(row: pd.Series, class_names: Sequence[str]) -> list[str]:
    width = len(row[S.PROB]) if row[S.PROB] is not None else len(class_names)
    names = list(class_names)[:width]
    return names + [f"class {i}" for i in range(len(names), width)]


# --- the image itself, for display --------------------------------------------------------------------------------------


def image_pixels(meta: dict[str, Any], image_id: str) -> np.ndarray:
    """The stored pixels of ``image_id`` as uint8 [H, W] or [H, W, 3], unresized, for display: located through the
    data config the run's checkpoint recorded, with the id conventions of the sources in
    ``meddiff/data/sources/`` (medmnist: ``<file stem>/<split>/<index>`` into ``<split>_images``; image_csv: the
    ``id_column`` or the path without extension, relative to ``image_root`` or the CSV's folder; isic_challenge:
    ``<image_dir>/<id>.jpg``; nih_cxr14: ``<id>.png`` under ``image_dirs``; mimic_cxr: the dicom_id's JPEG via the
metadata table; dicom: the relative path or the SOPInstanceUID, decoded by ``meddiff.data.dicom``). Numpy, PIL and
pydicom only: the pixels the model saw (resized, scaled) come from
    ``meddiff.data.decode``, which needs torch. ResultsError saying why when the image cannot be found or read."""
    cfg = ((meta.get("checkpoint_metadata") or {}).get("config") or {}).get("data") or {}
    source, params = cfg.get("source"), cfg.get("params") or {}
    if not source:
        raise ResultsError("this run's meta.json records no data config (checkpoint_metadata.config.data), so the "
                           "image cannot be located")
    try:
        if source == "medmnist":
            return _medmnist_pixels(Path(params["path"]).expanduser(), image_id)
        if source == "isic_challenge":
            return _file_pixels(Path(params["image_dir"]).expanduser() / f"{image_id}.jpg")
        if source == "image_csv":
            return _file_pixels(_csv_image_path(params, image_id))
        if source == "nih_cxr14":
            return _file_pixels(_nih_image_path(params, image_id))
        if source == "mimic_cxr":
            return _file_pixels(_mimic_image_path(params, image_id))
        if source == "dicom":
            budget = int(cfg.get("max_pixels") or DEFAULT_MAX_PIXELS)
            return _dicom_pixels(_dicom_image_path(params, image_id), budget)
    except KeyError as exc:
        raise ResultsError(f"the run's data config ({source}) lacks {exc}; cannot locate image {image_id!r}") from None
    raise ResultsError(f"images of data source {source!r} cannot be shown here (synthetic or unsupported); known: "
                       f"medmnist, image_csv, isic_challenge, nih_cxr14, mimic_cxr, dicom")


def _medmnist_pixels(path: Path, image_id: str) -> np.ndarray:
    parts = image_id.rsplit("/", 2)
    if len(parts) != 3 or not parts[2].isdigit():
        raise ResultsError(f"image id {image_id!r} is not <file>/<split>/<index> as the medmnist source writes it")
    array = _npz_array(str(path), f"{parts[1]}_images")
    index = int(parts[2])
    if not 0 <= index < len(array):
        raise ResultsError(f"{path}: {parts[1]}_images has {len(array)} images; {image_id!r} asks for index {index}")
    pixels = np.asarray(array[index])
    return pixels[..., 0] if pixels.ndim == 3 and pixels.shape[-1] == 1 else pixels


@functools.lru_cache(maxsize=4)
def _npz_array(path: str, key: str) -> np.ndarray:
    if not Path(path).is_file():
        raise ResultsError(f"{path}: the run's data file is not on this machine")
    with np.load(path, allow_pickle=False) as archive:
        if key not in archive.files:
            raise ResultsError(f"{path}: no key {key!r}; the file holds {sorted(archive.files)}")
        return archive[key]


@functools.lru_cache(maxsize=4)
def _csv_index(csv: str, path_column: str, id_column: str | None, root: str | None,
               template: str | None = None) -> dict[str, str]:
    table = _read_csv(Path(csv))
    base = Path(root).expanduser() if root else Path(csv).parent
    if template:  # image_csv's path_template: the relative path built from columns
        paths = [template.format(**row) for row in table.to_dict("records")]
    else:
        paths = table[path_column].tolist()
    ids = table[id_column] if id_column else [str(PurePosixPath(p).with_suffix("")) for p in paths]
    return {str(i): str(base / p) for i, p in zip(ids, paths)}


def _csv_image_path(params: dict[str, Any], image_id: str) -> Path:
    csv = Path(params["csv"]).expanduser()
    if not csv.is_file():
        raise ResultsError(f"{csv}: the run's labels CSV is not on this machine")
    index = _csv_index(str(csv), params.get("path_column") or "path", params.get("id_column"),
                       params.get("image_root"), params.get("path_template"))
    if image_id not in index:
        raise ResultsError(f"{csv}: no row with id {image_id!r}")
    return Path(index[image_id])


def _nih_image_path(params: dict[str, Any], image_id: str) -> Path:
    """nih_cxr14 ids are the Image Index without ``.png``, in a folder matching ``image_dirs`` (or its ``images/``)."""
    root = Path(params["root"]).expanduser()
    name = f"{image_id}.png"
    folders = sorted({p for pattern in params.get("image_dirs") or ["images*"] for p in root.glob(pattern)
                      if p.is_dir()})
    for folder in folders:
        for candidate in (folder / name, folder / "images" / name):
            if candidate.is_file():
                return candidate
    for folder in folders:
        found = next(folder.rglob(name), None)
        if found is not None:
            return found
    raise ResultsError(f"{root}: image {name} not found under image_dirs {params.get('image_dirs') or ['images*']}")


@functools.lru_cache(maxsize=2)
def _mimic_index(root: str) -> dict[str, tuple[str, str]]:
    for suffix in (".csv", ".csv.gz"):
        path = Path(root) / f"mimic-cxr-2.0.0-metadata{suffix}"
        if path.is_file():
            table = _read_csv(path)
            return {d.strip(): (s.strip(), t.strip())
                    for d, s, t in zip(table["dicom_id"], table["subject_id"], table["study_id"])}
    raise ResultsError(f"{root}: the run's mimic-cxr-2.0.0-metadata.csv(.gz) is not on this machine")


def _mimic_image_path(params: dict[str, Any], image_id: str) -> Path:
    """mimic_cxr ids are dicom_ids; the metadata table gives subject and study, hence the JPEG's path."""
    root = Path(params["root"]).expanduser()
    index = _mimic_index(str(root))
    if image_id not in index:
        raise ResultsError(f"{root}: no dicom_id {image_id!r} in mimic-cxr-2.0.0-metadata")
    subject, study = index[image_id]
    return root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{image_id}.jpg"


@functools.lru_cache(maxsize=2)
def _dicom_uid_index(root: str) -> dict[str, str]:
    """SOPInstanceUID -> file of every readable DICOM file under root (headers only)."""
    import pydicom

    index = {}
    for path in sorted(Path(root).rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"], force=True)
            uid = str(ds.get("SOPInstanceUID", "") or "")
        except Exception:  # noqa: BLE001 - any file that is not a readable DICOM is simply not indexed
            continue
        if uid:
            index.setdefault(uid, str(path))
    return index


def _dicom_image_path(params: dict[str, Any], image_id: str) -> Path:
    """dicom ids are the relative path without .dcm/.dicom (``id_from: path``) or the SOPInstanceUID."""
    root = Path(params["root"]).expanduser()
    if params.get("id_from") == "sop_instance_uid":
        found = _dicom_uid_index(str(root)).get(image_id)
        if found is None:
            raise ResultsError(f"{root}: no DICOM file with SOPInstanceUID {image_id!r}")
        return Path(found)
    for suffix in (".dcm", ".dicom", ".DCM", ".DICOM", ""):
        candidate = root / f"{image_id}{suffix}"
        if candidate.is_file():
            return candidate
    raise ResultsError(f"{root}: no DICOM file {image_id}(.dcm|.dicom)")


def _dicom_pixels(path: Path, max_pixels: int) -> np.ndarray:
    """A DICOM image for display: decoded by the model's reader (``meddiff.data.dicom``: modality LUT, VOI LUT /
    window, MONOCHROME1 inverted; a multi-frame or over-budget file is refused), grayscale stretched to uint8 0..255."""
    from meddiff.data.dicom import read_dicom

    try:
        values = read_dicom(path, str(path), max_pixels).pixels
    except DataError as exc:
        raise ResultsError(str(exc)) from None
    if values.ndim == 3:  # colour: already on the display scale
        return np.round(values).astype(np.uint8)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _read_csv(path: Path) -> pd.DataFrame:
    """A CSV as the sources read it (``meddiff.data.sources.tables.read_table``: dialect, BOM, gzip, true lines)."""
    from meddiff.data.sources.tables import read_table

    try:
        return read_table(path)
    except DataError as exc:
        raise ResultsError(f"cannot read the run's table: {exc}") from None


def _file_pixels(path: Path) -> np.ndarray:
    from PIL import Image

    if not path.is_file():
        raise ResultsError(f"{path}: image file not found")
    try:
        with Image.open(path, formats=IMAGE_FORMATS) as image:  # never another plugin (EPS runs Ghostscript)
            image.load()
            mode = "L" if image.mode in ("L", "I;16", "I", "F", "1") else "RGB"
            return np.asarray(image.convert(mode))
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from None
