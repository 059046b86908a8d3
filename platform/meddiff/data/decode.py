"""Pixels of a manifest row (or of uploaded bytes) as a float tensor in [-1, 1].

One decoder serves training, batch scoring and the single-image endpoint, so an image is turned into numbers the same
way everywhere:
    1. read: an image file (anything PIL opens), a row of an .npz array, or a synthetic phantom;
    2. mode: bring the image to 8-bit "L" / "RGB" or, for 16-bit grayscale, float "F" on the same 0..255 scale;
    3. channels: RGB -> grayscale by PIL "L" conversion (ITU-R 601 luma); grayscale -> RGB by repeating the plane;
    4. size: PIL bilinear resize (antialiased when shrinking) to image_size x image_size; the aspect ratio is not kept;
    5. scale: x = pixel / 127.5 - 1.
Every failure is a DataError naming the file, the manifest id and what was expected.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageFile

from meddiff.errors import ConfigError, DataError
from meddiff.data.npz import cached_npz_key
from meddiff.data.phantoms import PHANTOM_SCHEME, parse_phantom_uri, render_phantom

# Exceptions PIL plugins raise on corrupt or truncated data (a truncated JPEG is an OSError from load()).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


@dataclass(frozen=True)
class ImageDecoder:
    """Decode images to float32 tensors [channels, image_size, image_size] in [-1, 1]."""

    image_size: int
    channels: int

    def __post_init__(self) -> None:
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size < 1:
            raise ConfigError(f"ImageDecoder.image_size: expected a positive integer, got {self.image_size!r}")
        if self.channels not in (1, 3):
            raise ConfigError(f"ImageDecoder.channels: expected 1 (grayscale) or 3 (RGB), got {self.channels!r}")

    @classmethod
    def from_config(cls, data_cfg: Any) -> ImageDecoder:
        """The decoder a ``DataConfig`` describes (its image_size and channels)."""
        return cls(image_size=data_cfg.image_size, channels=data_cfg.channels)

    def decode_row(self, row: Mapping[str, Any]) -> torch.Tensor:
        """Decode one manifest row (a dict or pandas Series with MANIFEST_COLUMNS). Returns [C, S, S] float32."""
        path, row_id = str(row["path"]), str(row["id"])
        where = f"{path} (manifest id {row_id!r})"
        if path.startswith(PHANTOM_SCHEME):
            image = _phantom_image(path, int(row["array_index"]), int(row["label"]), where)
        elif path.lower().endswith(".npz"):
            image = _npz_image(path, str(row["array_key"]), int(row["array_index"]), where)
        else:
            image = _file_image(Path(path), where)
        return self._to_tensor(image, where)

    def decode_bytes(self, data: bytes, name: str = "<bytes>") -> torch.Tensor:
        """Decode an uploaded image file's bytes (PNG, JPEG, ...). Returns [C, S, S] float32."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise DataError(f"{name}: expected the image file's bytes, got {type(data).__name__}")
        return self._to_tensor(_open_and_load(io.BytesIO(bytes(data)), name), name)

    def decode_batch(self, rows: Sequence[Mapping[str, Any]] | pd.DataFrame) -> tuple[torch.Tensor, list[str | None]]:
        """Decode what can be decoded; never raises a DataError.

        Returns images [B, C, S, S] and, per row, None or the DataError message. Failed rows get an all-zero image
        so a long scoring job marks them failed and goes on.
        """
        if isinstance(rows, pd.DataFrame):
            rows = rows.to_dict("records")
        images = torch.zeros(len(rows), self.channels, self.image_size, self.image_size)
        errors: list[str | None] = []
        for i, row in enumerate(rows):
            try:
                images[i] = self.decode_row(row)
                errors.append(None)
            except DataError as exc:
                errors.append(str(exc))
        return images, errors

    def _to_tensor(self, image: Image.Image, where: str) -> torch.Tensor:
        image = _to_standard_mode(image, where)  # "L", "RGB" or "F" (0..255)
        if self.channels == 1 and image.mode == "RGB":
            image = image.convert("L")
        if image.size != (self.image_size, self.image_size):
            image = image.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32).copy())
        pixels = pixels.unsqueeze(0) if pixels.ndim == 2 else pixels.permute(2, 0, 1)
        if self.channels == 3 and pixels.shape[0] == 1:
            pixels = pixels.expand(3, -1, -1).contiguous()
        return pixels / 127.5 - 1.0


def _file_image(path: Path, where: str) -> Image.Image:
    if not path.is_file():
        raise DataError(f"{where}: image file does not exist; expected an image file at this path (check the data root)")
    return _open_and_load(path, where)


def _open_and_load(source: Path | io.BytesIO, where: str) -> Image.Image:
    """Open and fully decode, so corrupt and truncated files fail here and not later inside a resize."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Some library switched PIL to pad truncated files with grey instead of failing; refuse rather than train on them.
        raise DataError(
            f"{where}: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set by other code in this process), so truncated "
            "images would load silently; set it back to False"
        )
    try:
        with Image.open(source) as image:
            image.load()
            # The context manager closes the file; the decoded pixels stay in memory.
            return image
    except _DECODE_ERRORS as exc:
        raise DataError(
            f"{where}: cannot decode image ({type(exc).__name__}: {exc}); expected a complete image file PIL can read "
            "(PNG, JPEG, ...); re-export it or drop it from the manifest"
        ) from None


def _npz_image(path: str, key: str, index: int, where: str) -> Image.Image:
    if not key:
        raise DataError(f"{where}: an .npz row needs an array_key (e.g. 'test_images'), got ''")
    array = cached_npz_key(path, key)
    if not 0 <= index < len(array):
        raise DataError(
            f"{where}: array_index {index} is out of range for key {key!r}; expected 0..{len(array) - 1}"
        )
    pixels = array[index]
    if pixels.dtype != np.uint8:
        raise DataError(f"{where}: key {key!r} holds {pixels.dtype} pixels; expected uint8 images")
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[-1] == 3)):
        raise DataError(f"{where}: key {key!r} holds images of shape {pixels.shape}; expected [H, W] or [H, W, 3]")
    return Image.fromarray(np.ascontiguousarray(pixels))


def _phantom_image(path: str, index: int, label: int, where: str) -> Image.Image:
    seed = parse_phantom_uri(path)
    if index < 0:
        raise DataError(f"{where}: phantom rows need array_index >= 0 (the phantom index), got {index}")
    return Image.fromarray(render_phantom(seed, index, label))


def _to_standard_mode(image: Image.Image, where: str) -> Image.Image:
    """Convert explicitly to "L", "RGB" or, for 16-bit grayscale, "F" with values on the 8-bit 0..255 scale."""
    mode = image.mode
    if mode in ("L", "RGB"):
        return image
    if mode == "1":
        return image.convert("L")
    if mode in _SIXTEEN_BIT_MODES:
        # The full 16-bit range maps to 0..255 (65535 -> 255); no per-image min-max stretch, which would hide contrast.
        pixels = np.asarray(image, dtype=np.float32) * (255.0 / 65535.0)
        return Image.fromarray(pixels)
    if mode == "P" and "transparency" not in image.info:
        return image.convert("RGB")
    if mode in ("P", "PA"):  # palette with transparency: through RGBA, then over black like any alpha image
        return _over_black(image.convert("RGBA"))
    if mode in ("LA", "RGBA"):
        return _over_black(image)
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return image.convert("RGB")
    raise DataError(
        f"{where}: unsupported image mode {mode!r} (e.g. 32-bit integer or float images have no defined intensity "
        "range); expected 8-bit grayscale/RGB, 16-bit grayscale, palette or RGBA; convert the file first"
    )


def _over_black(image: Image.Image) -> Image.Image:
    """Composite an image with alpha over black, so hidden colour under transparent pixels cannot leak in."""
    pixels = np.asarray(image, dtype=np.float32)
    colour, alpha = pixels[..., :-1], pixels[..., -1:] / 255.0
    out = np.clip(colour * alpha + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(out[..., 0] if out.shape[-1] == 1 else out)
