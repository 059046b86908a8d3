"""Pixels of a manifest row (or of uploaded bytes) as a float tensor in [-1, 1].

One decoder serves training, batch scoring and the single-image endpoint (``serving/upload.py`` runs the same header
checks through ``open_checked``), so an image is turned into numbers, or refused, the same way everywhere:
    1. read: an image file, a row of an .npz array, or a synthetic phantom. Files are PNG, JPEG, TIFF, BMP, WebP
       (opened with ``Image.open(..., formats=ACCEPTED_FORMATS)``, so PIL never tries another plugin: EPS would run
       Ghostscript) or DICOM (recognised by content, ``meddiff.data.dicom``); anything else is an ``ImageFormatError``
       naming what it looks like (GIF, PDF, EPS/PostScript, SVG/XML, text, ...);
    2. header checks before any pixel is decoded: one frame only (multi-page TIFF, animated PNG / WebP, multi-frame
       DICOM are refused, never silently cut to frame 0) and width x height <= ``max_pixels`` (``data.max_pixels``;
       PIL's own ``Image.MAX_IMAGE_PIXELS`` guard is set to the same budget); a JPEG is decoded by libjpeg at 1/2, 1/4
       or 1/8 scale (``Image.draft``) when that still leaves at least image_size pixels per side;
    3. EXIF orientation is applied first (``ImageOps.exif_transpose``), so a phone photograph is upright;
    4. mode: 8-bit "L" / "RGB", or, for 16-bit grayscale, float "F" on the same 0..255 scale by the significant bits:
       the PNG sBIT chunk, the TIFF SMaxSampleValue / MaxSampleValue / BitsPerSample tags, else the smallest of 10,
       12, 14, 16 bits that holds the image's maximum (so 12-bit data stored in 16 bits uses the full range; 8-bit
       data stored in 16 bits is read as 10-bit). DICOM pixels come on 0..255 from ``meddiff.data.dicom.read_dicom``;
    5. channels: RGB -> grayscale by PIL "L" conversion (ITU-R 601 luma); grayscale -> RGB by repeating the plane;
    6. size by ``aspect`` (``data.aspect``): ``pad`` resizes the longer side to image_size and centres the image on
       black (letterbox), ``crop`` takes the centred square of the shorter side, ``stretch`` resizes both sides (the
       aspect ratio is not kept; bundles written before ``data.aspect`` existed use it). PIL bilinear (antialiased
       when shrinking); 8-bit pixels become float only after this step;
    7. scale: x = pixel / 127.5 - 1.
What was done is returned as a short note per image (``decode_notes``, the results column ``preprocess``), e.g.
``"PNG 300x512; bits 12 (max value); pad 300x512 -> 64"``. Every failure is a DataError naming the file, the manifest id
and what was expected.
"""

from __future__ import annotations

import io
import math
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from meddiff.config import ASPECTS, DEFAULT_MAX_PIXELS, IMAGE_FORMATS
from meddiff.errors import ConfigError, DataError, ImageFormatError
from meddiff.data.dicom import looks_like_dicom, read_dicom
from meddiff.data.npz import cached_npz_key
from meddiff.data.phantoms import PHANTOM_SCHEME, parse_phantom_uri, render_phantom

# Exceptions PIL plugins raise on corrupt or truncated data (a truncated JPEG is an OSError from load()).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
ACCEPTED_FORMATS = IMAGE_FORMATS  # PIL plugin names; DICOM goes through meddiff.data.dicom
ACCEPTED_TEXT = "PNG, JPEG, TIFF, BMP, WebP or DICOM"
_EXIF_STEPS = {2: "exif mirror", 3: "exif rotate 180", 4: "exif flip", 5: "exif transpose", 6: "exif rotate 90",
               7: "exif transverse", 8: "exif rotate 270"}
_SIGNIFICANT_BITS = (10, 12, 14, 16)
_HEAD_BYTES = 132  # a DICOM file's preamble (128) and "DICM"


@dataclass(frozen=True)
class ImageDecoder:
    """Decode images to float32 tensors [channels, image_size, image_size] in [-1, 1].

    aspect: ``pad``, ``crop`` or ``stretch`` (module docstring, step 6). ``stretch`` is the default of a decoder built
    directly, as every decoder was before ``data.aspect``; a config's decoder (``from_config``) uses ``data.aspect``.
    max_pixels: largest width x height decoded (checked from the header, before decoding).
    """

    image_size: int
    channels: int
    aspect: str = "stretch"
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size < 1:
            raise ConfigError(f"ImageDecoder.image_size: expected a positive integer, got {self.image_size!r}")
        if self.channels not in (1, 3):
            raise ConfigError(f"ImageDecoder.channels: expected 1 (grayscale) or 3 (RGB), got {self.channels!r}")
        if self.aspect not in ASPECTS:
            raise ConfigError(f"ImageDecoder.aspect: expected one of {', '.join(ASPECTS)}, got {self.aspect!r}")
        if isinstance(self.max_pixels, bool) or not isinstance(self.max_pixels, int) or self.max_pixels < 1:
            raise ConfigError(f"ImageDecoder.max_pixels: expected a positive integer, got {self.max_pixels!r}")

    @classmethod
    def from_config(cls, data_cfg: Any) -> ImageDecoder:
        """The decoder a ``DataConfig`` describes (image_size, channels, aspect, max_pixels)."""
        return cls(image_size=data_cfg.image_size, channels=data_cfg.channels, aspect=data_cfg.aspect,
                   max_pixels=data_cfg.max_pixels)

    @classmethod
    def for_model(cls, image_size: int, channels: int, metadata: Mapping[str, Any] | None) -> ImageDecoder:
        """The decoder of a loaded bundle: its size and channels, and the aspect policy and pixel budget of the data
        config it was trained with (``metadata["config"]["data"]``, read by ``config.bundle_data_config``; a bundle
        written before ``data.aspect`` existed keeps ``stretch``). Without metadata: ``stretch`` and the default
        budget."""
        config = metadata.get("config") if isinstance(metadata, Mapping) else None
        data = config.get("data") if isinstance(config, Mapping) else None
        if not isinstance(data, Mapping):
            return cls(image_size, channels)
        from meddiff.config import bundle_data_config

        data_cfg = bundle_data_config(data)
        return cls(image_size, channels, aspect=data_cfg.aspect, max_pixels=data_cfg.max_pixels)

    def decode_row(self, row: Mapping[str, Any]) -> torch.Tensor:
        """Decode one manifest row (a dict or pandas Series with MANIFEST_COLUMNS). Returns [C, S, S] float32."""
        return self.decode_row_noted(row)[0]

    def decode_row_noted(self, row: Mapping[str, Any]) -> tuple[torch.Tensor, str]:
        """``decode_row`` and the note of what was done to the image (module docstring)."""
        path, row_id = str(row["path"]), str(row["id"])
        where = f"{path} (manifest id {row_id!r})"
        if path.startswith(PHANTOM_SCHEME):
            image = _phantom_image(path, int(row["array_index"]), int(row["label"]), where)
            steps, scale = ["phantom"], None
        elif path.lower().endswith(".npz"):
            image = _npz_image(path, str(row["array_key"]), int(row["array_index"]), where)
            steps, scale = ["npz"], None
        else:
            file = Path(path)
            if not file.is_file():
                raise DataError(f"{where}: image file does not exist; expected an image file at this path (check the "
                                "data root)")
            image, steps, scale = self._read(file, where)
        return self._to_tensor(image, where, steps, scale), "; ".join(steps)

    def decode_bytes(self, data: bytes, name: str = "<bytes>") -> torch.Tensor:
        """Decode an uploaded image file's bytes (PNG, JPEG, TIFF, BMP, WebP, DICOM). Returns [C, S, S] float32."""
        return self.decode_bytes_noted(data, name)[0]

    def decode_bytes_noted(self, data: bytes, name: str = "<bytes>") -> tuple[torch.Tensor, str]:
        """``decode_bytes`` and the note of what was done to the image."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise DataError(f"{name}: expected the image file's bytes, got {type(data).__name__}")
        image, steps, scale = self._read(bytes(data), name)
        return self._to_tensor(image, name, steps, scale), "; ".join(steps)

    def decode_batch(self, rows: Sequence[Mapping[str, Any]] | pd.DataFrame) -> tuple[torch.Tensor, list[str | None]]:
        """Decode what can be decoded; never raises a DataError.

        Returns images [B, C, S, S] and, per row, None or the DataError message. Failed rows get an all-zero image
        so a long scoring job marks them failed and goes on.
        """
        images, errors, _ = self.decode_batch_noted(rows)
        return images, errors

    def decode_batch_noted(self, rows: Sequence[Mapping[str, Any]] | pd.DataFrame
                           ) -> tuple[torch.Tensor, list[str | None], list[str | None]]:
        """``decode_batch`` and, per row, the note of what was done (None for a failed row)."""
        if isinstance(rows, pd.DataFrame):
            rows = rows.to_dict("records")
        images = torch.zeros(len(rows), self.channels, self.image_size, self.image_size)
        errors: list[str | None] = []
        notes: list[str | None] = []
        for i, row in enumerate(rows):
            try:
                images[i], note = self.decode_row_noted(row)
                errors.append(None)
                notes.append(note)
            except DataError as exc:
                errors.append(str(exc))
                notes.append(None)
        return images, errors, notes

    def _read(self, source: Path | bytes, where: str) -> tuple[Image.Image, list[str], float | None]:
        """An image file (path or bytes), checked and fully decoded: a PIL image, the steps taken so far and, for a
        16-bit grayscale image (kept in its 16-bit mode until resized), the factor to the 0..255 scale."""
        head = _head(source)
        if _is_dicom(head, source if isinstance(source, Path) else where):
            return (*_dicom_image(source, where, self.max_pixels), None)
        image = open_checked(source, where, self.max_pixels, head)
        steps = [f"{image.format} {image.width}x{image.height}"]
        if image.format == "JPEG":
            full = image.size
            image.draft(image.mode, (self.image_size, self.image_size))  # libjpeg scale 1/2, 1/4, 1/8, never below
            if image.size != full:
                steps.append(f"jpeg draft {full[0]}x{full[1]} -> {image.width}x{image.height}")
        try:
            image.load()
        except _DECODE_ERRORS as exc:
            image.close()
            raise DataError(f"{where}: cannot decode image ({type(exc).__name__}: {exc}); expected a complete "
                            f"{image.format} file; re-export it or drop it from the manifest") from None
        if image.mode == "F":
            raise DataError(f"{where}: unsupported image mode 'F' (a float image has no defined intensity range); "
                            "expected 8-bit grayscale/RGB, 16-bit grayscale, palette or RGBA; convert the file first")
        fmt, sixteen = image.format, image.mode in _SIXTEEN_BIT_MODES or image.mode == "I"
        declared = _declared_bits(image, source) if sixteen else (None, "")  # read before a transpose drops the tags
        orientation = image.getexif().get(0x0112)
        if orientation in _EXIF_STEPS:
            image = ImageOps.exif_transpose(image)
            steps.append(_EXIF_STEPS[orientation])
        scale = None
        if sixteen:
            if image.mode not in ("I;16", "I"):  # PIL resizes (and measures) "I;16" and "I", not "I;16B" / "I;16L"
                image = image.convert("I")
            scale, bits_step = _sixteen_bit_scale(image, fmt, declared, where)
            steps.append(bits_step)
        return image, steps, scale

    def _to_tensor(self, image: Image.Image, where: str, steps: list[str], scale: float | None = None) -> torch.Tensor:
        if scale is None:
            image = _to_standard_mode(image, where)  # "L", "RGB" or "F" (0..255)
            if self.channels == 1 and image.mode == "RGB":
                image = image.convert("L")
        image = self._fit(image, steps)  # 16-bit grayscale is resized in its own mode: no full-size float copy
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32).copy())
        if scale is not None:
            pixels = (pixels * scale).clamp_(max=255.0)  # a value above the declared bits saturates
        pixels = pixels.unsqueeze(0) if pixels.ndim == 2 else pixels.permute(2, 0, 1)
        if self.channels == 3 and pixels.shape[0] == 1:
            pixels = pixels.expand(3, -1, -1).contiguous()
        return pixels / 127.5 - 1.0

    def _fit(self, image: Image.Image, steps: list[str]) -> Image.Image:
        """Bring the image to image_size x image_size by the aspect policy; notes the step when the size changes."""
        size, (width, height) = self.image_size, image.size
        if (width, height) == (size, size):
            return image
        steps.append(f"{self.aspect} {width}x{height} -> {size}")
        if self.aspect == "stretch" or width == height:
            return image.resize((size, size), Image.Resampling.BILINEAR)
        if self.aspect == "crop":
            side = min(width, height)
            left, top = (width - side) // 2, (height - side) // 2
            # crop first: resize(box=...) would blend in pixels just outside the square
            return image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BILINEAR)
        # pad: the longer side becomes image_size, the image is centred on black (0 in every mode used here)
        scale = size / max(width, height)
        inner = (max(1, round(width * scale)), max(1, round(height * scale)))
        canvas = Image.new(image.mode, (size, size), 0)
        canvas.paste(image.resize(inner, Image.Resampling.BILINEAR), ((size - inner[0]) // 2, (size - inner[1]) // 2))
        return canvas


def open_checked(source: Path | bytes, where: str, max_pixels: int, head: bytes | None = None) -> Image.Image:
    """Open a non-DICOM image file's header (no pixels decoded) and refuse it unless it is on the allow-list
    (``ImageFormatError``), has one frame and at most ``max_pixels`` pixels (``DataError``). The caller loads and
    closes the returned image. ``serving/upload.py`` runs the same checks on uploads."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Some library switched PIL to pad truncated files with grey instead of failing; refuse rather than train on it
        raise DataError(
            f"{where}: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set by other code in this process), so truncated "
            "images would load silently; set it back to False"
        )
    head = _head(source) if head is None else head
    if not head:
        raise ImageFormatError(f"{where}: the file is empty (0 bytes); expected an image file ({ACCEPTED_TEXT})")
    Image.MAX_IMAGE_PIXELS = max_pixels  # PIL's own bomb guard, for any code path that opens an image after this
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the budget is checked just below
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source, formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        kind = sniff_kind(head)
        if kind in ACCEPTED_FORMATS:
            raise DataError(f"{where}: cannot decode image (the {kind} header is broken); expected a complete image "
                            f"file ({ACCEPTED_TEXT}); re-export it or drop it from the manifest") from None
        raise ImageFormatError(f"{where}: {kind} is not accepted; expected {ACCEPTED_TEXT}") from None
    except Image.DecompressionBombError as exc:  # PIL's guard (over twice the budget) fired inside open
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{found.group(1)} pixels" if found else "over twice the budget"
        raise DataError(f"{where}: the image is {size}; the budget is data.max_pixels = {max_pixels} pixels; "
                        "downscale it first (or raise data.max_pixels)") from None
    except _DECODE_ERRORS as exc:
        raise DataError(f"{where}: cannot decode image ({type(exc).__name__}: {exc}); expected a complete image file "
                        f"({ACCEPTED_TEXT}); re-export it or drop it from the manifest") from None
    try:
        check_frames_and_size(image.format, getattr(image, "n_frames", 1), image.width, image.height, where,
                              max_pixels)
    except DataError:
        image.close()
        raise
    return image


def check_frames_and_size(kind: str, frames: int, width: int, height: int, where: str, max_pixels: int) -> None:
    """Refuse more than one frame, and more than ``max_pixels`` pixels, with a DataError naming both."""
    if frames > 1:
        raise DataError(f"{where}: the {kind} file has {frames} frames (pages or animation); expected a single image; "
                        "export the frame to use as its own file")
    if width * height > max_pixels:
        raise DataError(f"{where}: the {kind} image is {width} x {height} = {width * height} pixels; the budget is "
                        f"data.max_pixels = {max_pixels} pixels; downscale it first (or raise data.max_pixels)")


def sniff_kind(head: bytes) -> str:
    """What a file looks like from its first bytes: a PIL format name of the allow-list, or a description of a kind
    that is refused (used in messages only; PIL and ``meddiff.data.dicom`` decide what is read)."""
    signatures = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
                  (b"BM", "BMP"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"%PDF", "PDF"),
                  (b"%!PS", "EPS/PostScript"), (b"\xc5\xd0\xd3\xc6", "EPS/PostScript"), (b"8BPS", "Photoshop PSD"),
                  (b"\x00\x00\x01\x00", "ICO"), (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"), (b"\xffO\xffQ", "JPEG 2000"),
                  (b"PK\x03\x04", "ZIP archive"))
    for magic, kind in signatures:
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if len(head) >= _HEAD_BYTES and head[128:132] == b"DICM":
        return "DICOM"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<?xml", b"<svg", b"<!doctype svg")) or b"<svg" in text:
        return "SVG/XML"
    if text.startswith((b"<html", b"<!doctype html")):
        return "HTML"
    if text.startswith((b"{", b"[")):
        return "JSON"
    try:
        head.decode("utf-8")
        return "text (not an image file)"
    except UnicodeDecodeError:
        return f"an unknown binary format (first bytes {head[:8].hex()})"


def _head(source: Path | bytes) -> bytes:
    if isinstance(source, bytes):
        return source[:_HEAD_BYTES]
    with open(source, "rb") as f:
        return f.read(_HEAD_BYTES)


def _is_dicom(head: bytes, name: Path | str) -> bool:
    return looks_like_dicom(head, str(name))


def _dicom_image(source: Path | bytes, where: str, max_pixels: int) -> tuple[Image.Image, list[str]]:
    """A DICOM file through ``meddiff.data.dicom`` (which refuses frames and over-budget sizes before decoding): pixels
    on 0..255 as "F" (grayscale) or 8-bit "RGB", and its steps."""
    dicom = read_dicom(source, where, max_pixels)
    pixels = np.asarray(dicom.pixels, dtype=np.float32)
    if pixels.ndim == 3:
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
    else:
        image = Image.fromarray(np.ascontiguousarray(pixels), "F")
    height, width = pixels.shape[:2]
    return image, [f"DICOM {dicom.photometric} {width}x{height}", *dicom.steps, f"bits {dicom.bits_stored}"]


def _sixteen_bit_scale(image: Image.Image, fmt: str | None, declared: tuple[int | None, str],
                       where: str) -> tuple[float, str]:
    """The factor taking a 16-bit grayscale image to 0..255 by its significant bits (module docstring, step 4) and
    the step's note; read from the header and ``getextrema`` (no pixel copy)."""
    if image.mode == "I" and fmt not in ("PNG", "TIFF"):
        raise DataError(f"{where}: unsupported image mode 'I' in a {fmt} file; expected 8-bit or 16-bit grayscale")
    low, top = image.getextrema()
    if low < 0 or top > 65535:
        raise DataError(f"{where}: 32-bit integer pixels range {low}..{top}; expected 16-bit grayscale (0..65535); "
                        "convert the file first")
    bits, why = declared
    if bits is None or bits < 1 or bits > 16:
        bits = next((b for b in _SIGNIFICANT_BITS if top <= 2**b - 1), 16)
        why = "max value"
    return 255.0 / (2**bits - 1), f"bits {bits} ({why})"


def _declared_bits(image: Image.Image, source: Path | bytes) -> tuple[int | None, str]:
    """Significant bits a file declares: PNG sBIT; TIFF SMaxSampleValue, MaxSampleValue or BitsPerSample < 16."""
    if image.format == "PNG":
        sbit = _png_sbit(source)
        return (sbit, "sBIT") if sbit else (None, "")
    if image.format == "TIFF":
        tags = getattr(image, "tag_v2", {})
        for tag, name in ((341, "SMaxSampleValue"), (281, "MaxSampleValue")):
            value = tags.get(tag)
            value = value[0] if isinstance(value, tuple) and value else value
            if isinstance(value, (int, float)) and value > 0:
                return max(1, math.ceil(math.log2(float(value) + 1))), name
        bps = tags.get(258)
        bps = bps[0] if isinstance(bps, tuple) and bps else bps
        if isinstance(bps, int) and 1 <= bps < 16:
            return bps, "BitsPerSample"
    return None, ""


def _png_sbit(source: Path | bytes) -> int | None:
    """The grey significant bits of a PNG's sBIT chunk (read from the raw chunks before IDAT; PIL does not keep it)."""
    stream = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
    with stream:
        stream.read(8)
        for _ in range(64):  # the chunks before the image data; sBIT must come before PLTE and IDAT
            header = stream.read(8)
            if len(header) < 8:
                return None
            length, kind = struct.unpack(">I4s", header)
            if kind in (b"IDAT", b"IEND"):
                return None
            if kind == b"sBIT":
                data = stream.read(min(length, 4))
                return data[0] if data else None
            stream.seek(length + 4, io.SEEK_CUR)
    return None


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
    if mode == "F":  # 16-bit grayscale or DICOM, already on 0..255 (ImageDecoder._read)
        return image
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
