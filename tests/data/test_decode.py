"""ImageDecoder: every path kind, every mode conversion, every bad input."""

from __future__ import annotations


import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from meddiff.data import ImageDecoder
from meddiff.data.npz import cached_npz_key
from meddiff.errors import ConfigError, DataError


def _row(path, id_="img/1", key="", index=-1, label=0):
    return {"id": id_, "label": label, "split": "test", "source": "t", "path": str(path), "array_key": key,
            "array_index": index}


def _save(path, image, **kw):
    image.save(path, **kw)
    return path


def _check(tensor, channels, size):
    assert tensor.dtype == torch.float32 and tensor.shape == (channels, size, size)
    assert tensor.min() >= -1.0 and tensor.max() <= 1.0


def test_npz_rows_exact_values_and_cache(shared_data):
    path = shared_data("breastmnist28/breastmnist.npz")
    expected = np.load(path)["test_images"][3]
    cached_npz_key.cache_clear()
    decoder = ImageDecoder(image_size=28, channels=1)
    x = decoder.decode_row(_row(path, key="test_images", index=3))
    _check(x, 1, 28)
    assert torch.allclose(x[0], torch.from_numpy(expected.astype(np.float32)) / 127.5 - 1)
    for i in range(10):
        decoder.decode_row(_row(path, key="test_images", index=i))
    assert cached_npz_key.cache_info().misses == 1  # the file is read once, not per image
    rgb = ImageDecoder(image_size=32, channels=3).decode_row(_row(path, key="test_images", index=3))
    _check(rgb, 3, 32)
    assert torch.equal(rgb[0], rgb[1]) and torch.equal(rgb[0], rgb[2])


def test_npz_index_out_of_range_and_missing_key(shared_data):
    path = shared_data("breastmnist28/breastmnist.npz")
    decoder = ImageDecoder(image_size=28, channels=1)
    with pytest.raises(DataError, match=rf"{path} \(manifest id 'b/9'\): array_index 156 is out of range .*0..155"):
        decoder.decode_row(_row(path, id_="b/9", key="test_images", index=156))
    with pytest.raises(DataError, match=rf"{path}: missing key 'tset_images'"):
        decoder.decode_row(_row(path, key="tset_images", index=0))


def test_image_files_resize_and_channels(tmp_path, shared_data, write_image):
    jpeg = shared_data("isic_skin_180/Train/melanoma/ISIC_0000139.jpg")
    gray = write_image(tmp_path / "g.png", size=(40, 30), mode="L")
    for path in (jpeg, gray):
        for channels in (1, 3):
            _check(ImageDecoder(image_size=64, channels=channels).decode_row(_row(path)), channels, 64)
    # RGB -> grayscale is PIL's "L" conversion (then resized); libjpeg decodes at the smallest scale >= 48 pixels.
    with Image.open(jpeg) as full:
        full.draft("RGB", (48, 48))
        assert full.size[0] < Image.open(jpeg).size[0]  # the draft did shrink: the decoder decodes less
        expected = np.asarray(full.convert("L").resize((48, 48), Image.Resampling.BILINEAR), np.float32)
    x = ImageDecoder(image_size=48, channels=1).decode_row(_row(jpeg))
    assert torch.allclose(x[0], torch.from_numpy(expected) / 127.5 - 1)


def test_mode_conversions(tmp_path):
    decoder = ImageDecoder(image_size=8, channels=1)
    sixteen = np.array([[0, 65535], [32896, 65535]], dtype=np.uint16).repeat(4, 0).repeat(4, 1)
    x = decoder.decode_row(_row(_save(tmp_path / "16.png", Image.fromarray(sixteen))))
    assert Image.open(tmp_path / "16.png").mode == "I;16"
    assert x[0, 0, 0] == -1 and x[0, 0, 7] == 1 and abs(float(x[0, 7, 0]) - (128 / 127.5 - 1)) < 1e-5

    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:4, :, 3] = 255  # top half opaque, bottom half transparent
    x = decoder.decode_row(_row(_save(tmp_path / "a.png", Image.fromarray(rgba, "RGBA"))))
    assert torch.allclose(x[0, :4], torch.tensor(200 / 127.5 - 1)) and (x[0, 4:] == -1).all()

    palette = Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)).quantize(16)
    _check(decoder.decode_row(_row(_save(tmp_path / "p.png", palette))), 1, 8)
    _check(ImageDecoder(8, 3).decode_row(_row(_save(tmp_path / "p3.png", palette))), 3, 8)
    transparent = Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).quantize(4)
    x = decoder.decode_row(_row(_save(tmp_path / "pt.png", transparent, transparency=0)))
    assert (x == -1).all()  # the only palette entry is transparent: composited over black
    _check(decoder.decode_row(_row(_save(tmp_path / "1.png", Image.new("1", (8, 8), 1)))), 1, 8)
    _check(ImageDecoder(8, 3).decode_row(_row(_save(tmp_path / "la.png", Image.new("LA", (8, 8), (90, 255))))), 3, 8)


def test_unsupported_float_image(tmp_path):
    path = _save(tmp_path / "f.tiff", Image.fromarray(np.ones((8, 8), np.float32)))
    with pytest.raises(DataError, match=r"f.tiff \(manifest id 'img/1'\): unsupported image mode 'F'"):
        ImageDecoder(8, 1).decode_row(_row(path))


def test_decode_bytes(tmp_path, write_image):
    data = write_image(tmp_path / "u.png", size=(10, 12)).read_bytes()
    _check(ImageDecoder(image_size=16, channels=3).decode_bytes(data, "upload.png"), 3, 16)
    with pytest.raises(DataError, match=r"upload.png: text \(not an image file\) is not accepted; expected PNG, JPEG"):
        ImageDecoder(16, 3).decode_bytes(b"not an image at all", "upload.png")


def test_missing_file_names_file_and_id(tmp_path):
    path = tmp_path / "gone.png"
    with pytest.raises(DataError, match=rf"{path} \(manifest id 'cx/7'\): image file does not exist"):
        ImageDecoder(16, 1).decode_row(_row(path, id_="cx/7"))


def test_undecodable_file(tmp_path):
    path = tmp_path / "junk.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    with pytest.raises(DataError, match=rf"{path} \(manifest id 'img/1'\): cannot decode image"):
        ImageDecoder(16, 1).decode_row(_row(path))


def _truncated_jpeg(tmp_path, write_image):
    data = write_image(tmp_path / "full.jpg", size=(64, 64), fmt="JPEG").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    return path


def test_truncated_jpeg_is_detected(tmp_path, write_image):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    path = _truncated_jpeg(tmp_path, write_image)
    with pytest.raises(DataError, match=rf"{path} \(manifest id 'img/1'\): cannot decode image \(OSError: .*truncated"):
        ImageDecoder(16, 3).decode_row(_row(path))


def test_refuses_when_truncated_loading_was_enabled(tmp_path, write_image, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(DataError, match="LOAD_TRUNCATED_IMAGES is True"):
        ImageDecoder(16, 3).decode_row(_row(write_image(tmp_path / "ok.png")))


def test_decode_batch_reports_the_corrupt_row_and_goes_on(tmp_path, write_image):
    good = [write_image(tmp_path / f"{i}.png", seed=i) for i in range(3)]
    rows = [_row(good[0], "a"), _row(_truncated_jpeg(tmp_path, write_image), "bad"), _row(good[1], "b"),
            _row(tmp_path / "missing.png", "gone"), _row(good[2], "c")]
    images, errors = ImageDecoder(image_size=16, channels=3).decode_batch(rows)
    assert images.shape == (5, 3, 16, 16)
    assert [e is None for e in errors] == [True, False, True, False, True]
    assert "cut.jpg (manifest id 'bad'): cannot decode" in errors[1]
    assert "missing.png (manifest id 'gone'): image file does not exist" in errors[3]
    assert (images[1] == 0).all() and (images[3] == 0).all() and images[0].abs().sum() > 0


def test_decoder_params_are_checked():
    with pytest.raises(ConfigError, match="channels"):
        ImageDecoder(image_size=16, channels=2)
    with pytest.raises(ConfigError, match="image_size"):
        ImageDecoder(image_size=0, channels=1)


def _png_with_sbit(path, pixels, bits, **save):
    """A 16-bit grayscale PNG whose sBIT chunk says ``bits`` significant bits (inserted after IHDR by hand)."""
    import struct
    import zlib

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", **save)
    data = buf.getvalue()
    ihdr_end = 8 + 8 + 13 + 4
    chunk = struct.pack(">I", 1) + b"sBIT" + bytes([bits])
    chunk += struct.pack(">I", zlib.crc32(b"sBIT" + bytes([bits])))
    path.write_bytes(data[:ihdr_end] + chunk + data[ihdr_end:])
    return path


def test_pad_letterboxes_centred_on_black(tmp_path):
    wide = _save(tmp_path / "wide.png", Image.new("L", (32, 16), 200))
    x, note = ImageDecoder(16, 1, aspect="pad").decode_row_noted(_row(wide))
    grey = 200 / 127.5 - 1
    assert (x[0, :4] == -1).all() and (x[0, 12:] == -1).all()  # two black bars of (16 - 8) / 2 = 4 rows
    assert torch.allclose(x[0, 4:12], torch.tensor(grey), atol=1e-5)
    assert note == "PNG 32x16; pad 32x16 -> 16"
    tall = _save(tmp_path / "tall.png", Image.new("L", (10, 40), 255))  # 10 x 40 -> 4 x 16, bars of 6 columns
    x = ImageDecoder(16, 3, aspect="pad").decode_row(_row(tall))
    assert (x[:, :, :6] == -1).all() and (x[:, :, 10:] == -1).all() and torch.allclose(x[:, :, 6:10], torch.tensor(1.0))


def test_crop_keeps_the_centre_and_stretch_keeps_everything(tmp_path):
    pixels = np.zeros((16, 48), np.uint8)
    pixels[:, 16:32] = 255  # the centre square is white, the sides black and grey
    pixels[:, 32:] = 100
    path = _save(tmp_path / "strip.png", Image.fromarray(pixels))
    x, note = ImageDecoder(8, 1, aspect="crop").decode_row_noted(_row(path))
    assert (x == 1).all() and note.endswith("crop 48x16 -> 8")
    stretched = ImageDecoder(8, 1, aspect="stretch").decode_row(_row(path))
    assert stretched[0, :, 0].max() < -0.9 and stretched[0, :, 4].min() > 0.9
    assert abs(float(stretched[0, 0, 7]) - (100 / 127.5 - 1)) < 0.05


def test_exif_orientation_is_applied_first(tmp_path):
    pixels = np.zeros((8, 16), np.uint8)
    pixels[:, :8] = 255  # left half white as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display": the stored left edge becomes the top
    path = _save(tmp_path / "phone.jpg", Image.fromarray(pixels).convert("RGB"), exif=exif, quality=95)
    x, note = ImageDecoder(16, 1, aspect="stretch").decode_row_noted(_row(path))
    assert x[0, :6].mean() > 0.9 and x[0, -6:].mean() < -0.9  # upright: white on top, black below
    assert "exif rotate 90" in note
    plain = _save(tmp_path / "plain.jpg", Image.fromarray(pixels).convert("RGB"), quality=95)
    y = ImageDecoder(16, 1, aspect="stretch").decode_row(_row(plain))
    assert y[0, :, :6].mean() > 0.9 and y[0, :, -6:].mean() < -0.9  # no tag: as stored


def test_twelve_bit_in_sixteen_uses_the_full_range(tmp_path):
    pixels = np.array([[0, 4095], [2048, 4095]], np.uint16).repeat(4, 0).repeat(4, 1)
    path = _save(tmp_path / "12bit.png", Image.fromarray(pixels))
    x, note = ImageDecoder(8, 1).decode_row_noted(_row(path))
    assert x[0, 0, 0] == -1 and x[0, 0, 7] == 1 and abs(float(x[0, 7, 0]) - (2048 * 255 / 4095 / 127.5 - 1)) < 1e-5
    assert "bits 12 (max value)" in note


def test_png_sbit_is_honoured(tmp_path):
    pixels = np.full((8, 8), 1000, np.uint16)  # would read as 10-bit by its maximum; sBIT says 12
    x, note = ImageDecoder(8, 1).decode_row_noted(_row(_png_with_sbit(tmp_path / "sbit.png", pixels, 12)))
    assert "bits 12 (sBIT)" in note
    assert torch.allclose(x, torch.tensor(1000 * 255 / 4095 / 127.5 - 1), atol=1e-5)


def test_sixteen_bit_tiff_by_tags_and_by_range(tmp_path):
    pixels = np.array([[0, 1023], [512, 1023]], np.uint16).repeat(4, 0).repeat(4, 1)
    tagged = tmp_path / "tagged.tif"
    Image.fromarray(pixels).save(tagged, tiffinfo={341: 1023})  # SMaxSampleValue
    x, note = ImageDecoder(8, 1).decode_row_noted(_row(tagged))
    assert "bits 10 (SMaxSampleValue)" in note and x[0, 0, 7] == 1 and x[0, 0, 0] == -1
    plain = _save(tmp_path / "plain.tif", Image.fromarray(pixels * 16))  # 14-bit range, no tag
    x, note = ImageDecoder(8, 1).decode_row_noted(_row(plain))
    assert "bits 14 (max value)" in note and abs(float(x[0, 0, 7]) - (16368 * 255 / 16383 / 127.5 - 1)) < 1e-5


def test_jpeg_is_decoded_by_libjpeg_at_a_reduced_scale(tmp_path):
    path = _save(tmp_path / "big.jpg", Image.new("RGB", (400, 200), (90, 90, 90)))
    x, note = ImageDecoder(32, 1, aspect="crop").decode_row_noted(_row(path))
    assert "jpeg draft 400x200 -> 100x50" in note and note.endswith("crop 100x50 -> 32")  # 1/4 keeps >= 32 per side
    assert torch.allclose(x, torch.tensor(90 / 127.5 - 1), atol=0.02)


def test_decode_batch_noted_returns_a_note_per_row(tmp_path):
    good = _save(tmp_path / "g.png", Image.new("L", (20, 10), 50))
    images, errors, notes = ImageDecoder(8, 1, aspect="pad").decode_batch_noted([_row(good), _row(tmp_path / "x.png")])
    assert errors[0] is None and "does not exist" in errors[1]
    assert notes == ["PNG 20x10; pad 20x10 -> 8", None]


def test_aspect_and_budget_are_validated_and_come_from_the_config():
    from meddiff.config import DataConfig

    with pytest.raises(ConfigError, match="aspect: expected one of pad, crop, stretch, got 'squash'"):
        ImageDecoder(16, 1, aspect="squash")
    with pytest.raises(ConfigError, match="max_pixels"):
        ImageDecoder(16, 1, max_pixels=0)
    decoder = ImageDecoder.from_config(DataConfig(image_size=16, aspect="crop", max_pixels=1000))
    assert (decoder.aspect, decoder.max_pixels) == ("crop", 1000)
    assert ImageDecoder.from_config(DataConfig()).aspect == "pad"


def test_a_bundle_without_aspect_keeps_stretch():
    old = {"config": {"data": {"image_size": 16, "channels": 1}}}  # written before data.aspect existed
    assert ImageDecoder.for_model(16, 1, old).aspect == "stretch"
    new = {"config": {"data": {"image_size": 16, "channels": 1, "aspect": "pad", "max_pixels": 5000}}}
    assert (ImageDecoder.for_model(16, 1, new).aspect, ImageDecoder.for_model(16, 1, new).max_pixels) == ("pad", 5000)
    assert ImageDecoder.for_model(16, 1, None).aspect == "stretch"
    with pytest.raises(ConfigError, match="data.aspect: expected one of pad, crop, stretch"):
        ImageDecoder.for_model(16, 1, {"config": {"data": {"aspect": "fit"}}})


def test_dicom_is_recognised_by_content_without_a_suffix(tmp_path):
    from tests.dicom_files import write_dicom

    pixels = np.array([[0, 4095], [4095, 0]], np.uint16).repeat(8, 0).repeat(8, 1)  # 16 x 16, 12-bit
    path = write_dicom(tmp_path / "IM000001", pixels, bits_stored=12)  # hospital export: no suffix
    x, note = ImageDecoder(8, 3).decode_row_noted(_row(path))
    _check(x, 3, 8)
    assert x[:, 0, 0].eq(-1).all() and x[:, 0, 7].eq(1).all() and torch.equal(x[0], x[1])
    assert note.startswith("DICOM MONOCHROME2 16x16") and "bits 12" in note and note.endswith("stretch 16x16 -> 8")
    y = ImageDecoder(8, 1).decode_bytes(path.read_bytes(), "upload")
    assert torch.equal(y[0], x[0])


def test_sixteen_bit_png_with_exif_keeps_its_sbit(tmp_path):
    pixels = np.zeros((8, 16), np.uint16)
    pixels[:, :8] = 1000  # left half bright as stored; sBIT 10 -> 1000 / 1023 of full scale
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _png_with_sbit(tmp_path / "rot.png", pixels, 10, exif=exif)
    x, note = ImageDecoder(16, 1).decode_row_noted(_row(path))
    assert note.startswith("PNG 16x8; exif rotate 90; bits 10 (sBIT)")
    assert torch.allclose(x[0, :6], torch.tensor(1000 * 255 / 1023 / 127.5 - 1), atol=1e-4)  # stored left is on top
    assert (x[0, -6:] == -1).all()


def test_big_endian_sixteen_bit_tiff_is_resized_and_scaled(tmp_path):
    pixels = np.zeros((16, 32), ">u2")
    pixels[:, 16:] = 4000  # right half bright; 12-bit by its maximum
    path = tmp_path / "be.tif"
    Image.frombytes("I;16B", (32, 16), pixels.tobytes()).save(path)
    assert Image.open(path).mode == "I;16B"
    x, note = ImageDecoder(8, 3, aspect="crop").decode_row_noted(_row(path))
    assert note == "TIFF 32x16; bits 12 (max value); crop 32x16 -> 8"
    assert (x[:, :, :3] == -1).all() and torch.allclose(x[:, :, 5:], torch.tensor(4000 * 255 / 4095 / 127.5 - 1))
