"""Checks of an uploaded request body, before any pixel reaches the model.

Every refusal is an ``UploadError`` carrying the HTTP status and a message that says what was wrong and what to send
instead; nothing here raises anything else for bad input (a bad body must never become a 500). The checks, in order:
    1. body: present (400), within the size cap (413, checked from Content-Length before reading, then while reading);
    2. content type: ``multipart/form-data`` with a ``file`` field, or the raw file with an image content type or
       ``application/dicom`` / ``application/octet-stream`` (415);
    3. format: the decoder's allow-list (``meddiff.data.decode.open_checked``: PNG, JPEG, TIFF, BMP, WebP; DICOM
       recognised by content, ``meddiff.data.dicom.looks_like_dicom``); GIF, EPS, PDF, SVG, text ... are refused (415);
    4. header, before decoding, with the decoder's own checks: one frame only, width x height within the pixel budget
       (``UploadLimits.max_pixels``, as ``data.max_pixels``; DICOM: ``check_dicom_size``), sides within
       ``min_side`` / ``max_side`` (422); a decompression bomb is refused unread;
    5. decode: the whole file is decoded, so a truncated or corrupt file is refused here (422);
    6. channels: the model's channel count (422): a grayscale model refuses a colour image and an RGB model a
       grayscale one, rather than converting silently; an RGB file whose three planes are equal counts as grayscale,
       an alpha channel is accepted only when fully opaque; DICOM MONOCHROME1/2 is grayscale.
The pixels themselves are then produced by the checkpoint's ``ImageDecoder``, exactly as in batch scoring.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from meddiff.config import DEFAULT_MAX_PIXELS
from meddiff.data.decode import open_checked
from meddiff.data.dicom import check_dicom_size, looks_like_dicom, read_dicom, read_dicom_header
from meddiff.errors import ConfigError, DataError, ImageFormatError, MeddiffError

SUPPORTED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "DICOM")
RAW_CONTENT_TYPES = ("image/png", "image/jpeg", "image/jpg", "image/bmp", "image/tiff", "image/webp",
                     "application/dicom", "application/octet-stream")
_WHERE = "the uploaded image"
MAX_ID_CHARS = 256
# An RGB file counts as grayscale when its planes differ by at most this much (JPEG rounding of a grey image).
GREY_TOLERANCE = 8
_GREY_MODES = ("1", "L", "I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
_HOW_TO_SEND = ("send one image file, e.g. `curl -F file=@image.png http://HOST:8000/predict` or "
                "`curl --data-binary @image.png -H 'Content-Type: image/png' http://HOST:8000/predict`")


class UploadError(MeddiffError):
    """A request body the endpoint refuses; ``status`` is the HTTP status (4xx) to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class UploadLimits:
    """max_bytes: largest accepted image file (and request body); min_side / max_side: accepted image sides (pixels);
    max_pixels: largest width x height (the decoder's pixel budget, ``data.max_pixels``), checked from the header."""

    max_bytes: int = 10 * 2**20
    min_side: int = 8
    max_side: int = 8192
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.min_side < 1 or self.max_side < self.min_side or self.max_pixels < 1:
            raise ConfigError(f"UploadLimits: expected max_bytes >= 1, 1 <= min_side <= max_side and max_pixels >= 1, "
                              f"got {self}")


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int
    mode: str


def check_content_length(header: str | None, limits: UploadLimits) -> None:
    """Refuse a body whose declared length is over the cap before reading a byte of it (413)."""
    if header is None:
        return
    try:
        length = int(header)
    except ValueError:
        raise UploadError(400, f"Content-Length {header!r} is not a number") from None
    if length > limits.max_bytes:
        raise UploadError(413, f"request body is {length} bytes; the limit is {limits.max_bytes} bytes "
                               f"({limits.max_bytes / 2**20:.1f} MiB); send a smaller image (downscale or compress it)")


def body_kind(content_type: str | None) -> str:
    """``multipart`` (a form with a ``file`` field) or ``raw`` (the image file itself); anything else is a 415."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "multipart/form-data":
        return "multipart"
    if media in RAW_CONTENT_TYPES:
        return "raw"
    got = f"Content-Type {media!r}" if media else "no Content-Type"
    raise UploadError(415, f"got {got}; expected multipart/form-data with a 'file' field or the raw image with "
                           f"Content-Type {', '.join(RAW_CONTENT_TYPES[:2])} (or another image type); {_HOW_TO_SEND}")


def check_image_id(image_id: str | None) -> str | None:
    """An explicit image id (it seeds the noise, as the manifest id does in batch scoring): 1-256 printable chars."""
    if image_id is None:
        return None
    if not isinstance(image_id, str) or not image_id.strip() or len(image_id) > MAX_ID_CHARS or not image_id.isprintable():
        shown = image_id[:40] + "..." if isinstance(image_id, str) and len(image_id) > 40 else image_id
        raise UploadError(422, f"id {shown!r} is not a valid image id; expected 1-{MAX_ID_CHARS} printable characters "
                               "(e.g. the manifest id used in batch scoring), or leave it out to seed by the file's sha256")
    return image_id


def content_id(data: bytes) -> str:
    """The image id of an upload without an explicit id: ``sha256:<hex>`` of the file's bytes, so the same file always
    gets the same noise and the same answer."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def inspect_image(data: bytes, channels: int, limits: UploadLimits) -> ImageInfo:
    """Run checks 1 and 3-6 on an image file's bytes; returns what was found or raises UploadError."""
    if not data:
        raise UploadError(400, f"the image is empty (0 bytes); {_HOW_TO_SEND}")
    if len(data) > limits.max_bytes:
        raise UploadError(413, f"the image is {len(data)} bytes; the limit is {limits.max_bytes} bytes; send a smaller image")
    if looks_like_dicom(data[:132]):
        return _inspect_dicom(data, channels, limits)
    try:
        image = open_checked(data, _WHERE, limits.max_pixels)  # the decoder's allow-list, frames and pixel budget
    except ImageFormatError as exc:
        raise UploadError(415, f"{exc}; {_HOW_TO_SEND}") from None
    except DataError as exc:
        raise UploadError(422, str(exc)) from None
    except Exception as exc:  # a broken header can fail in a plugin's open with anything
        raise UploadError(422, f"the image header cannot be read ({type(exc).__name__}: {exc}); "
                               "send a complete, uncorrupted image file") from None
    with image:
        fmt = image.format or "?"
        width, height = image.size
        _check_sides(width, height, limits)
        try:
            image.load()
        except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error ... on bad data
            raise UploadError(422, f"the {fmt} file is truncated or corrupt ({type(exc).__name__}: {exc}); "
                                   "send the complete file") from None
        _check_channels(image, channels)
        return ImageInfo(fmt, width, height, image.mode)


def _inspect_dicom(data: bytes, channels: int, limits: UploadLimits) -> ImageInfo:
    """Checks 3-6 for a DICOM file, with ``meddiff.data.dicom`` (the decoder's own reader)."""
    try:
        header = read_dicom_header(data, _WHERE)
        width, height = check_dicom_size(header, _WHERE, limits.max_pixels)  # frames and budget, from the header
    except DataError as exc:
        raise UploadError(422, str(exc)) from None
    _check_sides(width, height, limits)
    photometric = str(header.get("PhotometricInterpretation", "") or "")
    if photometric.startswith("MONOCHROME"):  # grayscale by its header: the pixels are decoded once, by the decoder
        found = 1
    else:  # a colour file may hold a grey picture: look at its pixels
        try:
            planes = read_dicom(data, _WHERE, limits.max_pixels).pixels
        except DataError as exc:
            raise UploadError(422, str(exc)) from None
        found = 1 if float((planes.max(axis=-1) - planes.min(axis=-1)).max(initial=0.0)) <= GREY_TOLERANCE else 3
    _check_found_channels(found, channels, f"DICOM {photometric}")
    return ImageInfo("DICOM", width, height, photometric)


def _check_sides(width: int, height: int, limits: UploadLimits) -> None:
    if min(width, height) < limits.min_side:
        raise UploadError(422, f"the image is {width} x {height} pixels; the smallest accepted side is "
                               f"{limits.min_side} pixels")
    if max(width, height) > limits.max_side:
        raise UploadError(422, f"the image is {width} x {height} pixels; the largest accepted side is "
                               f"{limits.max_side} pixels; downscale it first")


def _check_channels(image: Image.Image, channels: int) -> None:
    mode = image.mode
    if mode == "P":
        if "transparency" in image.info:
            mode, image = "RGBA", image.convert("RGBA")
        else:
            mode, image = "RGB", image.convert("RGB")
    if mode in _ALPHA_MODES:
        alpha = np.asarray(image.getchannel("A"))
        if alpha.min() < 255:
            raise UploadError(422, f"the image has a transparency (alpha) channel that is not fully opaque "
                                   f"(mode {image.mode}, {len(image.getbands())} channels); expected "
                                   f"{_expected(channels)}; flatten it or export without transparency")
        mode = "L" if mode in ("LA", "La") else "RGB"
        image = image.convert(mode)
    if mode in _GREY_MODES:
        found = 1
    elif mode in ("RGB", "YCbCr"):
        found = 1 if _is_grey(image) else 3
    else:
        raise UploadError(422, f"the image has mode {image.mode} ({len(image.getbands())} channels: "
                               f"{''.join(image.getbands())}); expected {_expected(channels)}")
    _check_found_channels(found, channels, f"mode {image.mode}")


def _check_found_channels(found: int, channels: int, kind: str) -> None:
    if channels == 1 and found == 3:
        raise UploadError(422, f"the image is a colour RGB image (3 channels that differ, {kind}); this model reads "
                               "grayscale images (1 channel); send the grayscale image (a grey image stored as RGB is "
                               "accepted)")
    if channels == 3 and found == 1:
        raise UploadError(422, f"the image is grayscale (1 channel, {kind}); this model reads RGB colour "
                               "images (3 channels); send the colour image")


def _is_grey(image: Image.Image) -> bool:
    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    return int((rgb.max(axis=-1) - rgb.min(axis=-1)).max(initial=0)) <= GREY_TOLERANCE


def _expected(channels: int) -> str:
    return "a grayscale image (1 channel)" if channels == 1 else "an RGB colour image (3 channels)"
