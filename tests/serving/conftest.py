"""Image bodies for the endpoint tests: a good grayscale file and the bad bodies the endpoint must refuse."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

def png(array: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", **kw)
    return buf.getvalue()


def encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def png_with_size(data: bytes, width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height (CRC fixed), pixels unchanged: a decompression-bomb-style header."""
    assert data[12:16] == b"IHDR"
    ihdr = struct.pack(">II", width, height) + data[24:29]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return data[:16] + ihdr + crc + data[33:]


@pytest.fixture(scope="session")
def image_files() -> dict[str, bytes]:
    """Named image bodies: one good grayscale file and every kind the endpoint must refuse (see serving.upload)."""
    rng = np.random.default_rng(0)
    grey = (rng.random((28, 28)) * 255).astype(np.uint8)
    colour = (rng.random((28, 28, 3)) * 255).astype(np.uint8)
    good_png = png(grey)
    rgba = np.dstack([colour, np.full((28, 28), 128, np.uint8)])
    opaque_rgba = np.dstack([np.repeat(grey[..., None], 3, axis=-1), np.full((28, 28), 255, np.uint8)])
    jpeg = encode(Image.fromarray(grey), "JPEG")
    return {
        "good_png": good_png,
        "good_jpeg": jpeg,
        "grey_as_rgb_png": png(np.repeat(grey[..., None], 3, axis=-1)),
        "opaque_rgba_png": png(opaque_rgba),
        "colour_png": png(colour),
        "transparent_rgba_png": png(rgba),
        "cmyk_jpeg": encode(Image.fromarray(colour).convert("CMYK"), "JPEG"),
        "truncated_png": good_png[: len(good_png) // 2],
        "truncated_jpeg": jpeg[: len(jpeg) // 2],
        "tiny_png": png(grey[:4, :4]),
        "huge_header_png": png_with_size(good_png, 30000, 30000),
        "gif": encode(Image.fromarray(grey), "GIF"),
        "text": b"this is not an image, just some text\n",
        "json": b'{"image": "xray.png"}',
        "pdf": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n",
        "empty": b"",
    }
