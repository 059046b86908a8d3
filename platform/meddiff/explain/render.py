"""Pictures of explanations: PNGs of inputs, reconstructions and difference maps, and the contact-sheet gallery.

Difference maps follow the paper (Fig. 4): grayscale images get a *signed* map (reconstruction - input; red = the class
adds intensity, blue = it removes it, on a symmetric diverging scale), colour images an *absolute* map (mean over the
RGB channels of |reconstruction - input|, dark = unchanged). The scale is shared by all classes of one image, so their
maps compare; its limit (in [-1, 1] pixel units) is the index column ``difference_scale``.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from meddiff.durable import atomic_write

SIGNED_CMAP = "RdBu_r"
ABSOLUTE_CMAP = "inferno"
MIN_SIDE = 128  # small images (28-32 px) are enlarged with nearest-neighbour so every pixel stays visible


def safe_name(image_id: str) -> str:
    """A file-system-safe, unique folder name for an image id (readable prefix + 8 hex of its sha256)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", image_id).strip("._")[-60:] or "image"
    return f"{readable}-{hashlib.sha256(image_id.encode()).hexdigest()[:8]}"


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """[C, H, W] in [-1, 1] -> uint8 [H, W] (C = 1) or [H, W, 3]."""
    arr = ((image.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).numpy()
    return arr[0] if arr.shape[0] == 1 else np.transpose(arr, (1, 2, 0))


def enlarge(arr: np.ndarray, min_side: int = MIN_SIDE) -> np.ndarray:
    """Nearest-neighbour upscaling by an integer factor so the short side reaches ``min_side``."""
    factor = max(1, -(-min_side // min(arr.shape[:2])))
    return np.repeat(np.repeat(arr, factor, axis=0), factor, axis=1) if factor > 1 else arr


def difference_mode(channels: int) -> str:
    return "signed" if channels == 1 else "absolute"


def difference_scale(differences: torch.Tensor) -> float:
    """The shared colour-scale limit of one image's maps: max |difference| over its classes ([K, C, H, W])."""
    if differences.shape[1] == 1:
        return max(float(differences.abs().max()), 1e-3)
    return max(float(differences.abs().mean(dim=1).max()), 1e-3)


def difference_rgb(difference: torch.Tensor, vmax: float) -> np.ndarray:
    """[C, H, W] signed difference -> uint8 RGB [H, W, 3]: signed diverging map (C = 1) or absolute map (C = 3)."""
    from matplotlib import colormaps

    d = difference.detach().float().cpu()
    if d.shape[0] == 1:
        values = (d[0].numpy() / vmax + 1.0) / 2.0  # -vmax -> 0, 0 -> 0.5, +vmax -> 1
        cmap = colormaps[SIGNED_CMAP]
    else:
        values = d.abs().mean(dim=0).numpy() / vmax
        cmap = colormaps[ABSOLUTE_CMAP]
    return (cmap(np.clip(values, 0.0, 1.0))[..., :3] * 255).round().astype(np.uint8)


def save_png(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Image.fromarray(enlarge(arr)).save(tmp, format="PNG"))


def write_image_pngs(
    out_dir: Path, image_id: str, image: torch.Tensor, reconstructions: torch.Tensor, class_names: Sequence[str],
    classes: Sequence[int],
) -> tuple[str, list[str], list[str], float]:
    """Write input.png, recon-<class>.png and diff-<class>.png of one image under ``out_dir/png/<safe id>/``.

    Args:
        image: [C, H, W]; reconstructions: [K, C, H, W] (pixels in [-1, 1]) for ``classes``.
    Returns: the input path, per-class reconstruction and difference paths (relative to ``out_dir``) and the
        difference maps' colour-scale limit.
    """
    folder = Path("png") / safe_name(image_id)
    diffs = reconstructions - image[None]
    vmax = difference_scale(diffs)
    inp = folder / "input.png"
    save_png(to_uint8(image), out_dir / inp)
    recon_paths, diff_paths = [], []
    for j, c in enumerate(classes):
        tag = re.sub(r"[^A-Za-z0-9._-]+", "_", class_names[c])
        rp, dp = folder / f"recon-{c}-{tag}.png", folder / f"diff-{c}-{tag}.png"
        save_png(to_uint8(reconstructions[j]), out_dir / rp)
        save_png(difference_rgb(diffs[j], vmax), out_dir / dp)
        recon_paths.append(rp.as_posix())
        diff_paths.append(dp.as_posix())
    return inp.as_posix(), recon_paths, diff_paths, vmax


def contact_sheet(index, out_dir: Path, title: str, rows_per_page: int = 8) -> list[Path]:
    """Gallery pages ``gallery-01.png``, ... from an explanation index frame (ok rows): one row per image with the
    input, the reconstruction under every class and every class's difference map, captioned with the label, the
    scored prediction and uncertainty and each reconstruction's error. Returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from meddiff.results import explain_schema as X

    for stale in out_dir.glob("gallery-*.png"):  # a re-run draws every page again; none may be left from before
        stale.unlink()
    ok = index[index[X.STATUS] == X.STATUS_OK]
    if ok.empty:
        return []
    ids = list(dict.fromkeys(ok[X.IMAGE_ID]))
    classes = sorted(ok[X.CLASS].unique())
    names = dict(zip(ok[X.CLASS], ok[X.CLASS_NAME]))
    mode = ok[X.DIFF_MODE].iloc[0]
    ncols = 1 + 2 * len(classes)
    pages = [ids[i : i + rows_per_page] for i in range(0, len(ids), rows_per_page)]
    written = []
    for p, page in enumerate(pages, 1):
        fig, axes = plt.subplots(len(page), ncols, figsize=(1.7 * ncols, 1.95 * len(page) + 0.7), squeeze=False)
        for r, iid in enumerate(page):
            rows = ok[ok[X.IMAGE_ID] == iid].set_index(X.CLASS)
            first = rows.iloc[0]
            cells = [(first[X.INPUT_PNG], _caption_input(first, names))]
            cells += [(rows.loc[c, X.RECON_PNG], f"{names[c]}{' (true)' if rows.loc[c, X.FACTUAL] else ''}\n"
                                                    f"mse {rows.loc[c, X.RECON_ERROR]:.4f}") for c in classes]
            cells += [(rows.loc[c, X.DIFF_PNG], f"{mode} diff\n{names[c]}") for c in classes]
            for ax, (png, caption) in zip(axes[r], cells):
                ax.imshow(np.asarray(Image.open(out_dir / png)), cmap="gray", vmin=0, vmax=255)
                ax.set_title(caption, fontsize=6.5)
                ax.set_axis_off()
        legend = "red = class adds intensity, blue = removes" if mode == "signed" else "bright = changed"
        fig.suptitle(f"{title}\npage {p}/{len(pages)}; difference colour scale shared by the classes of an image; "
                     f"{legend}", fontsize=7.5)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (1.95 * len(page) + 0.7)))
        path = out_dir / f"gallery-{p:02d}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _caption_input(row, names: dict) -> str:
    from meddiff.results import explain_schema as X

    iid = str(row[X.IMAGE_ID])
    short = iid if len(iid) <= 18 else "..." + iid[-15:]
    pred = row[X.PRED]
    pred_name = names.get(int(pred), str(pred)) if pred == pred and pred is not None else "?"
    unc = row[X.UNCERTAINTY]
    unc_text = f"{abs(unc):.2f}" if unc is not None and unc == unc else "?"
    return f"{short} ({row[X.REASON]})\ntrue {row[X.LABEL_NAME]}, pred {pred_name}, u {unc_text}"
