"""ImageDecoder: every path kind, every mode conversion, every bad input."""

from __future__ import annotations


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
