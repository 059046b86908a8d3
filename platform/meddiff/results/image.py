"""One scored image of a results set as frames: its row, its votes (or softmax) per class, its per-draw errors and
how the vote share settles as draws are added; and its pixels for display (``image_pixels``), found from the data
config the run's checkpoint recorded (meta.json ``checkpoint_metadata.config.data``)."""

from __future__ import annotations

import functools
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import numpy as np
import pandas as pd

from meddiff.config import IMAGE_FORMATS
from meddiff.errors import ResultsError
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
    ``<image_dir>/<id>.jpg``). Numpy and PIL only: the pixels the model saw (resized, scaled) come from
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
    except KeyError as exc:
        raise ResultsError(f"the run's data config ({source}) lacks {exc}; cannot locate image {image_id!r}") from None
    raise ResultsError(f"images of data source {source!r} cannot be shown here (synthetic or unsupported); known: "
                       f"medmnist, image_csv, isic_challenge")


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
def _csv_index(csv: str, path_column: str, id_column: str | None, root: str | None) -> dict[str, str]:
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    base = Path(root).expanduser() if root else Path(csv).parent
    ids = table[id_column] if id_column else [str(PurePosixPath(p).with_suffix("")) for p in table[path_column]]
    return {str(i): str(base / p) for i, p in zip(ids, table[path_column])}


def _csv_image_path(params: dict[str, Any], image_id: str) -> Path:
    csv = Path(params["csv"]).expanduser()
    if not csv.is_file():
        raise ResultsError(f"{csv}: the run's labels CSV is not on this machine")
    index = _csv_index(str(csv), params.get("path_column") or "path", params.get("id_column"),
                       params.get("image_root"))
    if image_id not in index:
        raise ResultsError(f"{csv}: no row with id {image_id!r}")
    return Path(index[image_id])


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
