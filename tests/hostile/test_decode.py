"""Hostile image files against the one decoder (``meddiff.data.decode``): each case is a distinct kind of bad input that
must be refused per row with a message naming the file and what was wrong, while the other rows of the batch decode.

Bombs are built without decoding them: the PNG bomb is a real mostly-zero 20000 x 20000 PNG (zlib-streamed, about 0.5
MB), the JPEG and TIFF bombs are small files whose headers claim a huge size.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from meddiff.data import ImageDecoder
from meddiff.errors import DataError, ImageFormatError
from tests.dicom_files import write_dicom

BUDGET = 36_000_000


def _row(path: Path, id_: str) -> dict:
    return {"id": id_, "label": 0, "split": "test", "source": "t", "path": str(path), "array_key": "",
            "array_index": -1}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(path: Path) -> Path:
    """A genuine 20000 x 20000 8-bit grayscale PNG of zeros: ~0.4 GB of pixels in well under a megabyte."""
    side = 20000
    squeezer = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte 0 + a row of zeros
    idat = b"".join(squeezer.compress(row) for _ in range(side)) + squeezer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    assert path.stat().st_size < 2**20
    return path


def jpeg_bomb(path: Path) -> Path:
    """A tiny JPEG whose SOF0 header claims 60000 x 60000 pixels."""
    buf = io.BytesIO()
    Image.new("L", (16, 16), 128).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)  # height, width
    path.write_bytes(bytes(data))
    return path


def tiff_bomb(path: Path) -> Path:
    """A small uncompressed TIFF whose ImageWidth / ImageLength tags claim 50000 x 50000 pixels."""
    buf = io.BytesIO()
    Image.new("L", (16, 16), 7).save(buf, "TIFF")
    data = bytearray(buf.getvalue())
    assert data[:4] == b"II*\x00"
    ifd = struct.unpack("<I", data[4:8])[0]
    for i in range(struct.unpack("<H", data[ifd:ifd + 2])[0]):
        entry = ifd + 2 + 12 * i
        if struct.unpack("<H", data[entry:entry + 2])[0] in (256, 257):
            data[entry + 2:entry + 12] = struct.pack("<HII", 4, 1, 50000)  # LONG, count 1, value
    path.write_bytes(bytes(data))
    return path


def multipage_tiff(path: Path) -> Path:
    pages = [Image.new("L", (16, 16), v) for v in (10, 200, 90)]
    pages[0].save(path, "TIFF", save_all=True, append_images=pages[1:])
    return path


def animated_png(path: Path) -> Path:
    frames = [Image.new("L", (16, 16), v) for v in (0, 255)]
    frames[0].save(path, "PNG", save_all=True, append_images=frames[1:], duration=100)
    return path


def eps(path: Path) -> Path:
    path.write_text("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nnewpath 0 0 moveto 16 16 lineto stroke\n"
                    "showpage\n%%EOF\n")
    return path


def gif(path: Path) -> Path:
    Image.new("L", (16, 16), 100).save(path, "GIF")
    return path


def pdf(path: Path) -> Path:
    path.write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")
    return path


def svg(path: Path) -> Path:
    path.write_text('<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16">'
                    '<rect width="16" height="16"/></svg>\n')
    return path


def text_named_png(path: Path) -> Path:
    path.write_text("patient,label\n1,pneumonia\n")
    return path


def zero_bytes(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def truncated_png(path: Path) -> Path:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(buf, "PNG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def png_just_over_budget(path: Path) -> Path:
    Image.new("L", (40, 40), 1).save(path)  # 1600 pixels against a budget of 1000: under PIL's own 2x guard
    return path


def dicom_multiframe(path: Path) -> Path:
    return write_dicom(path, np.zeros((3, 16, 16), np.uint16), bits_stored=12)


def dicom_over_budget(path: Path) -> Path:
    return write_dicom(path, np.zeros((40, 40), np.uint16), bits_stored=12)  # 1600 pixels against a budget of 1000


# (id, builder, file name, pixel budget, error class, words the message must contain)
HOSTILE = [
    ("png_bomb_20000x20000", png_bomb, "bomb.png", BUDGET, DataError,
     "400000000 pixels; the budget is data.max_pixels = 36000000 pixels"),
    ("jpeg_bomb_header_60000x60000", jpeg_bomb, "bomb.jpg", BUDGET, DataError, "the budget is data.max_pixels"),
    ("tiff_bomb_header_50000x50000", tiff_bomb, "bomb.tif", BUDGET, DataError, "the budget is data.max_pixels"),
    ("png_just_over_budget", png_just_over_budget, "over.png", 1000, DataError,
     "the PNG image is 40 x 40 = 1600 pixels; the budget is data.max_pixels = 1000 pixels"),
    ("multipage_tiff", multipage_tiff, "pages.tif", BUDGET, DataError, "the TIFF file has 3 frames"),
    ("animated_png", animated_png, "anim.png", BUDGET, DataError, "the PNG file has 2 frames"),
    ("eps_postscript", eps, "figure.eps", BUDGET, ImageFormatError, "EPS/PostScript is not accepted"),
    ("gif", gif, "scan.gif", BUDGET, ImageFormatError, "GIF is not accepted"),
    ("pdf_bytes", pdf, "report.pdf", BUDGET, ImageFormatError, "PDF is not accepted"),
    ("svg_xml", svg, "drawing.svg", BUDGET, ImageFormatError, "SVG/XML is not accepted"),
    ("text_named_png", text_named_png, "labels.png", BUDGET, ImageFormatError,
     "text (not an image file) is not accepted"),
    ("zero_byte_file", zero_bytes, "empty.png", BUDGET, ImageFormatError, "the file is empty (0 bytes)"),
    ("truncated_png", truncated_png, "cut.png", BUDGET, DataError, "cannot decode image"),
    ("dicom_multiframe", dicom_multiframe, "series.dcm", BUDGET, DataError, "multi-frame file with 3 frames"),
    ("dicom_over_budget", dicom_over_budget, "big_noext", 1000, DataError, "expected at most 1000"),
]


@pytest.mark.parametrize("name,build,filename,budget,error,words", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_file_is_refused_with_its_reason(tmp_path, name, build, filename, budget, error, words):
    path = build(tmp_path / filename)
    decoder = ImageDecoder(16, 1, max_pixels=budget)
    with pytest.raises(error) as err:
        decoder.decode_row(_row(path, name))
    message = str(err.value)
    assert message.startswith(f"{path} (manifest id {name!r}): ") and words in message
    with pytest.raises(error, match="^the upload: "):  # the same refusal for uploaded bytes
        decoder.decode_bytes(path.read_bytes(), "the upload")


def test_a_batch_with_every_hostile_kind_fails_those_rows_and_decodes_the_rest(tmp_path):
    good = []
    for i in range(3):
        path = tmp_path / f"good{i}.png"
        Image.new("L", (24, 12), 60 * (i + 1)).save(path)
        good.append(path)
    rows = [_row(good[0], "good/0")]
    for name, build, filename, *_ in HOSTILE:
        rows.append(_row(build(tmp_path / filename), name))
        if len(rows) == 6:
            rows.append(_row(good[1], "good/1"))
    rows.append(_row(good[2], "good/2"))
    decoder = ImageDecoder(16, 1, aspect="pad", max_pixels=1000)  # the DICOM budget case needs it; 24 x 12 fits
    images, errors, notes = decoder.decode_batch_noted(rows)
    ok = [r["id"] for r, e in zip(rows, errors) if e is None]
    assert ok == ["good/0", "good/1", "good/2"]
    for row, err in zip(rows, errors):
        if row["id"].startswith("good/"):
            continue
        assert err is not None and err.startswith(f"{row['path']} (manifest id {row['id']!r}): ")
    for i, row in enumerate(rows):
        if row["id"].startswith("good/"):
            level = 60 * (int(row["id"][-1]) + 1) / 127.5 - 1
            assert torch.allclose(images[i, 0, 4:12], torch.tensor(level)) and (images[i, 0, :4] == -1).all()
            assert notes[i] == "PNG 24x12; pad 24x12 -> 16"
        else:
            assert (images[i] == 0).all() and notes[i] is None


def test_pil_bomb_guard_follows_the_budget(tmp_path):
    ImageDecoder(16, 1, max_pixels=5000).decode_row(_row(_save_small(tmp_path), "ok"))
    assert Image.MAX_IMAGE_PIXELS == 5000
    ImageDecoder(16, 1).decode_row(_row(_save_small(tmp_path), "ok"))
    assert Image.MAX_IMAGE_PIXELS == BUDGET


def _save_small(tmp_path: Path) -> Path:
    path = tmp_path / "small.png"
    Image.new("L", (20, 20), 3).save(path)
    return path


def test_no_code_path_lets_pil_try_the_eps_plugin(tmp_path, monkeypatch):
    """The decoder, the leakage check's small decode and the dashboard's image reader all open with the allow-list, so
    PIL never reaches the EPS plugin (which runs Ghostscript)."""
    from PIL import EpsImagePlugin

    from meddiff.data.leakage import _open_small
    from meddiff.errors import ResultsError
    from meddiff.results.image import _file_pixels

    def tried(*args, **kwargs):
        raise AssertionError("PIL tried the EPS plugin")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", tried)
    path = eps(tmp_path / "figure.eps")
    with pytest.raises(ImageFormatError, match="EPS/PostScript is not accepted"):
        ImageDecoder(16, 1).decode_row(_row(path, "eps"))
    assert _open_small(path.read_bytes(), str(path), "eps") is None  # skipped by the near-duplicate check
    with pytest.raises(ResultsError, match="cannot decode image"):
        _file_pixels(path)
