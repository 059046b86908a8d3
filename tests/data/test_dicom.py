"""read_dicom: the grayscale pipeline (PS3.3 C.11) and colour (C.7.6.3), checked pixel by pixel against values computed
by hand from the standard; files are written by tests/dicom_files.py."""

from __future__ import annotations

import numpy as np
import pytest

from meddiff.data.dicom import (
    DICOM_MAGIC_OFFSET, DicomPixels, check_dicom_size, looks_like_dicom, read_dicom, read_dicom_header,
)
from tests.dicom_files import write_dicom

BUDGET = 10**6


def _read(path) -> DicomPixels:
    return read_dicom(path, f"{path.name} (manifest id 'x')", BUDGET)


def _check(result: DicomPixels, shape) -> np.ndarray:
    assert result.pixels.dtype == np.float32 and result.pixels.shape == shape
    assert np.isfinite(result.pixels).all() and result.pixels.min() >= 0 and result.pixels.max() <= 255
    return result.pixels.astype(np.float64)


def test_8bit_monochrome2_is_stored_value(tmp_path):
    stored = np.array([[0, 1, 128], [200, 254, 255]], np.uint8)
    result = _read(write_dicom(tmp_path / "a.dcm", stored))
    np.testing.assert_allclose(_check(result, (2, 3)), stored, atol=1e-4)
    assert result.steps == ("bit_range",) and result.bits_stored == 8 and result.photometric == "MONOCHROME2"


def test_12_bits_in_16_use_the_full_display_range(tmp_path):
    # The old decoder scaled 12-bit values by 65535, so 4095 came out as 16/255 ("almost black").
    stored = np.array([[0, 1024], [2048, 4095]], np.uint16)
    result = _read(write_dicom(tmp_path / "a.dcm", stored, bits_stored=12))
    np.testing.assert_allclose(_check(result, (2, 2)), stored / 4095 * 255, atol=1e-3)
    assert result.pixels.max() == 255 and result.bits_stored == 12


def test_bits_above_high_bit_are_ignored(tmp_path):
    # PS3.5 8.1.1: bits outside BitsStored are not part of the value (overlays, garbage).
    stored = np.array([[0xF000 | 4095, 0x1000 | 7]], np.uint16)
    result = _read(write_dicom(tmp_path / "a.dcm", stored, bits_stored=12))
    np.testing.assert_allclose(_check(result, (1, 2)), [[255, 7 / 4095 * 255]], atol=1e-3)


def test_16bit_full_range(tmp_path):
    stored = np.array([[0, 257, 65535]], np.uint16)
    result = _read(write_dicom(tmp_path / "a.dcm", stored))
    np.testing.assert_allclose(_check(result, (1, 3)), [[0, 1, 255]], atol=1e-3)


def test_signed_ct_like_intercept_scaled_by_possible_range_not_image_range(tmp_path):
    # int16 stored 12 bits signed: -2048..2047; slope 1, intercept -1024 -> possible HU -3072..1023.
    stored = np.array([[-2048, 0], [1000, 2047]], np.int16)
    result = _read(write_dicom(tmp_path / "a.dcm", stored, bits_stored=12, signed=True, slope=1, intercept=-1024))
    hu = stored.astype(np.float64) - 1024
    np.testing.assert_allclose(_check(result, (2, 2)), (hu + 3072) / 4095 * 255, atol=1e-3)
    assert result.steps == ("modality_lut", "bit_range")


def test_narrow_image_is_not_stretched(tmp_path):
    stored = np.array([[100, 110]], np.uint16)
    result = _read(write_dicom(tmp_path / "a.dcm", stored, bits_stored=12))
    assert _check(result, (1, 2)).max() < 10  # a min/max stretch would give 0 and 255


def test_rescale_slope_and_intercept_without_window(tmp_path):
    # slope 2, intercept 10 on 8-bit unsigned: possible output 10..520.
    stored = np.array([[0, 100, 255]], np.uint8)
    result = _read(write_dicom(tmp_path / "a.dcm", stored, slope=2, intercept=10))
    expected = ((stored * 2.0 + 10) - 10) / 510 * 255
    np.testing.assert_allclose(_check(result, (1, 3)), expected, atol=1e-3)


def test_monochrome1_is_the_exact_inversion_of_monochrome2(tmp_path):
    stored = np.array([[0, 1000, 4095], [17, 2048, 3000]], np.uint16)
    m2 = _read(write_dicom(tmp_path / "m2.dcm", stored, bits_stored=12))
    m1 = _read(write_dicom(tmp_path / "m1.dcm", stored, bits_stored=12, photometric="MONOCHROME1"))
    np.testing.assert_allclose(_check(m1, (2, 3)), 255 - _check(m2, (2, 3)), atol=1e-3)
    assert m1.steps == ("bit_range", "invert") and m1.photometric == "MONOCHROME1"


def _linear_window(x, c, w):
    """PS3.3 C.11.2.1.2.1 written out, mapped to 0..255."""
    if x <= c - 0.5 - (w - 1) / 2:
        return 0.0
    if x > c - 0.5 + (w - 1) / 2:
        return 255.0
    return ((x - (c - 0.5)) / (w - 1) + 0.5) * 255


def test_window_below_inside_and_above(tmp_path):
    stored = np.array([[100, 1500, 2000, 2400, 4000]], np.uint16)
    result = _read(write_dicom(tmp_path / "a.dcm", stored, bits_stored=12, window=(2000, 1001)))
    pixels = _check(result, (1, 5))
    assert pixels[0, 0] == 0 and pixels[0, 4] == 255  # below and above the window
    np.testing.assert_allclose(pixels[0], [_linear_window(v, 2000, 1001) for v in stored[0]], atol=1e-3)
    assert 0 < pixels[0, 2] < 255 and result.steps == ("window",)


def test_window_applies_after_the_modality_lut(tmp_path):
    # CT-like: stored 1064 -> HU 40; a soft-tissue window 40/400 puts it in the middle.
    stored = np.array([[1064, 0, 4000]], np.int16)
    result = _read(write_dicom(tmp_path / "a.dcm", stored, signed=True, intercept=-1024, window=(40, 400)))
    pixels = _check(result, (1, 3))
    np.testing.assert_allclose(pixels[0], [_linear_window(v - 1024, 40, 400) for v in stored[0]], atol=1e-3)
    assert pixels[0, 1] == 0 and pixels[0, 2] == 255
    assert result.steps == ("modality_lut", "window")


def test_multi_valued_window_uses_the_first(tmp_path):
    stored = np.array([[500, 1000, 1500]], np.uint16)
    path = write_dicom(tmp_path / "a.dcm", stored, bits_stored=12)
    import pydicom

    ds = pydicom.dcmread(path)
    ds.WindowCenter, ds.WindowWidth = [1000, 3000], [1001, 100]
    ds.save_as(path)
    pixels = _check(_read(path), (1, 3))
    np.testing.assert_allclose(pixels[0], [_linear_window(v, 1000, 1001) for v in stored[0]], atol=1e-3)


@pytest.mark.parametrize("function", ["LINEAR_EXACT", "SIGMOID"])
def test_voi_lut_function_variants(tmp_path, function):
    stored = np.array([[500, 1000, 1200, 3000]], np.uint16)
    path = write_dicom(tmp_path / "a.dcm", stored, bits_stored=12, window=(1000, 400))
    import pydicom

    ds = pydicom.dcmread(path)
    ds.VOILUTFunction = function
    ds.save_as(path)
    x = stored[0].astype(np.float64)
    if function == "LINEAR_EXACT":  # C.11.2.1.3.2
        expected = np.clip((x - 1000) / 400 + 0.5, 0, 1) * 255
    else:  # C.11.2.1.3.1
        expected = 255 / (1 + np.exp(-4 * (x - 1000) / 400))
    result = _read(path)
    np.testing.assert_allclose(_check(result, (1, 4))[0], expected, atol=1e-3)
    assert result.steps == ("window_" + function.lower(),)


def test_voi_lut_sequence_is_used_before_the_window(tmp_path):
    # LUT of 4 entries starting at stored value 10, 16-bit output; values below 10 take the first entry, above 13
    # the last.
    lut = [0, 1000, 30000, 65535]
    stored = np.array([[0, 10, 11, 12, 13, 200]], np.uint16)
    result = _read(write_dicom(tmp_path / "a.dcm", stored, voi_lut=lut, voi_lut_first=10, window=(5, 2)))
    expected = np.array([0, 0, 1000, 30000, 65535, 65535]) / 65535 * 255
    np.testing.assert_allclose(_check(result, (1, 6))[0], expected, atol=1e-3)
    assert result.steps == ("voi_lut",)


def test_rgb_scaled_by_its_bits(tmp_path):
    rgb = np.array([[[0, 128, 255], [10, 20, 30]]], np.uint8)
    result = _read(write_dicom(tmp_path / "a.dcm", rgb))
    np.testing.assert_allclose(_check(result, (1, 2, 3)), rgb, atol=1e-4)
    assert result.photometric == "RGB" and result.steps == ("bit_range",)


@pytest.mark.parametrize("compression", ["rle", "jpeg2000"])
@pytest.mark.parametrize(
    "stored, kwargs",
    [
        (np.arange(1024, dtype=np.uint16).reshape(32, 32) * 4, {"bits_stored": 12}),
        (np.arange(1024, dtype=np.uint16).reshape(32, 32).astype(np.uint8), {"photometric": "MONOCHROME1"}),
        (np.arange(3072, dtype=np.uint16).reshape(32, 32, 3).astype(np.uint8), {}),
    ],
    ids=["12-bit", "monochrome1", "rgb"],
)
def test_compressed_gives_the_same_pixels_as_uncompressed(tmp_path, compression, stored, kwargs):
    plain = _read(write_dicom(tmp_path / "plain.dcm", stored, **kwargs))
    packed = _read(write_dicom(tmp_path / "packed.dcm", stored, compression=compression, **kwargs))
    np.testing.assert_array_equal(packed.pixels, plain.pixels)
    assert packed.steps == plain.steps


def test_without_preamble_from_bytes_and_from_path(tmp_path):
    stored = np.array([[0, 4095], [1, 2]], np.uint16)
    path = write_dicom(tmp_path / "bare.dcm", stored, bits_stored=12, add_preamble=False)
    data = path.read_bytes()
    assert data[DICOM_MAGIC_OFFSET:DICOM_MAGIC_OFFSET + 4] != b"DICM"
    from_bytes, from_path = read_dicom(data, "upload", BUDGET), _read(path)
    np.testing.assert_array_equal(from_bytes.pixels, from_path.pixels)
    np.testing.assert_allclose(from_path.pixels, stored / 4095 * 255, atol=1e-3)
    # with the preamble, the same pixels
    with_preamble = _read(write_dicom(tmp_path / "p.dcm", stored, bits_stored=12))
    np.testing.assert_array_equal(with_preamble.pixels, from_path.pixels)


def test_without_preamble_under_another_name(tmp_path):
    path = write_dicom(tmp_path / "scan.bin", np.array([[5, 6]], np.uint8), add_preamble=False)
    np.testing.assert_allclose(_read(path).pixels, [[5, 6]], atol=1e-4)


def test_one_bit_image(tmp_path):
    import pydicom
    from pydicom.pixels import pack_bits

    bits = np.array([[0, 1, 1, 0, 1, 0, 0, 1], [1, 1, 0, 0, 0, 0, 1, 1]], np.uint8)
    path = write_dicom(tmp_path / "a.dcm", bits)
    ds = pydicom.dcmread(path)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
    ds.PixelData = pack_bits(bits)
    ds.save_as(path)
    result = _read(path)
    np.testing.assert_array_equal(_check(result, (2, 8)), bits * 255.0)
    assert result.bits_stored == 1


def test_palette_color(tmp_path):
    import pydicom

    stored = np.array([[0, 1, 2, 3]], np.uint8)
    path = write_dicom(tmp_path / "a.dcm", stored, photometric="PALETTE COLOR")
    ds = pydicom.dcmread(path)
    for colour, values in (("Red", [0, 255, 0, 128]), ("Green", [0, 0, 255, 128]), ("Blue", [0, 0, 0, 255])):
        ds.add_new(pydicom.datadict.tag_for_keyword(f"{colour}PaletteColorLookupTableDescriptor"), "US", [4, 0, 8])
        ds.add_new(pydicom.datadict.tag_for_keyword(f"{colour}PaletteColorLookupTableData"), "OW", bytes(values))
    ds.save_as(path)
    result = _read(path)
    expected = np.array([[[0, 0, 0], [255, 0, 0], [0, 255, 0], [128, 128, 255]]], np.float64)
    np.testing.assert_allclose(_check(result, (1, 4, 3)), expected, atol=1e-3)
    assert result.steps == ("palette",)


@pytest.mark.parametrize("compression", [None, "rle"])
def test_ybr_full_becomes_rgb(tmp_path, compression):
    # YBR_FULL of pure grey (Y, 128, 128) is RGB (Y, Y, Y) (PS3.3 C.7.6.3.1.2).
    ybr = np.zeros((2, 2, 3), np.uint8)
    ybr[..., 0] = [[0, 100], [200, 255]]
    ybr[..., 1:] = 128
    result = _read(write_dicom(tmp_path / "a.dcm", ybr, photometric="YBR_FULL", compression=compression))
    pixels = _check(result, (2, 2, 3))
    np.testing.assert_allclose(pixels, np.repeat(ybr[..., :1], 3, axis=-1), atol=1.0)
    assert result.steps == ("ybr_to_rgb", "bit_range") and result.photometric == "YBR_FULL"


def test_header_and_size_check(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", np.zeros((3, 5), np.uint8))
    ds = read_dicom_header(path, "a")
    assert "PixelData" not in ds
    assert check_dicom_size(ds, "a", 15) == (5, 3)


@pytest.mark.parametrize(
    "head, name, expected",
    [
        (b"\0" * 128 + b"DICM" + b"\2\0", "", True),
        (b"\x02\x00\x00\x00UL\x04\x00", "", True),
        (b"\x08\x00\x05\x00CS\x0a\x00", "", True),
        (b"\x89PNG\r\n\x1a\n", "", False),
        (b"\x89PNG\r\n\x1a\n", "x.dcm", True),
        (b"id,label\n", "a.DICOM", True),
        (b"", "", False),
        (b"hello world", "a.txt", False),
    ],
    ids=["preamble", "meta-group", "group-8", "png", "dcm-name", "dicom-name", "empty", "text"],
)
def test_looks_like_dicom(head, name, expected):
    assert looks_like_dicom(head, name) is expected


def test_ybr_full_422_native_is_upsampled_and_converted(tmp_path):
    import pydicom

    # One row of two pixels stored as Y1 Y2 Cb Cr (PS3.3 C.7.6.3.1.2); neutral chroma gives grey.
    path = write_dicom(tmp_path / "a.dcm", np.zeros((1, 2, 3), np.uint8), photometric="YBR_FULL_422")
    ds = pydicom.dcmread(path)
    ds.PixelData = bytes([50, 200, 128, 128])
    ds.save_as(path)
    result = _read(path)
    np.testing.assert_allclose(_check(result, (1, 2, 3)), [[[50] * 3, [200] * 3]], atol=1.0)
    assert result.steps == ("ybr_to_rgb", "bit_range")


def test_jpeg_baseline_ybr_is_converted_once(tmp_path):
    # pydicom's JPEG decoders return RGB for YBR_FULL_422 themselves; converting again would shift every colour.
    import io

    import pydicom
    from PIL import Image
    from pydicom.encaps import encapsulate

    yy, xx = np.mgrid[0:32, 0:32]
    rgb = np.stack([yy * 8, xx * 8, 255 - yy * 4], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=95)
    path = write_dicom(tmp_path / "a.dcm", rgb, photometric="YBR_FULL_422")
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGBaseline8Bit
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds.save_as(path)
    result = _read(path)
    reference = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), np.float64)
    assert np.abs(_check(result, (32, 32, 3)) - reference).mean() < 2.0
    assert np.abs(result.pixels - rgb).mean() < 3.0
    assert result.steps == ("ybr_to_rgb", "bit_range")


def test_32_bit_allocated(tmp_path):
    import pydicom

    stored = np.array([[0, 1 << 20, (1 << 24) - 1]], np.uint32)
    path = write_dicom(tmp_path / "a.dcm", np.zeros((1, 3), np.uint16))
    ds = pydicom.dcmread(path)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 24, 23
    ds.PixelData = stored.tobytes()
    ds.save_as(path)
    result = _read(path)
    np.testing.assert_allclose(_check(result, (1, 3)), stored / ((1 << 24) - 1) * 255, atol=1e-3)


def test_monochrome1_inverts_after_the_window(tmp_path):
    stored = np.array([[100, 2000, 4000]], np.uint16)
    path = write_dicom(tmp_path / "a.dcm", stored, bits_stored=12, photometric="MONOCHROME1", window=(2000, 1001))
    result = _read(path)
    expected = [255 - _linear_window(v, 2000, 1001) for v in stored[0]]
    np.testing.assert_allclose(_check(result, (1, 3))[0], expected, atol=1e-3)
    assert result.steps == ("window", "invert")


def test_modality_lut_sequence(tmp_path):
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    # PS3.3 C.11.1: 4 entries from stored value 0, 16-bit entries; stored values past the last entry take the last.
    # The possible values after the LUT are its entries, 0..4095, so 4095 is white.
    stored = np.array([[0, 1, 2, 3, 10]], np.uint16)
    path = write_dicom(tmp_path / "a.dcm", stored, bits_stored=12)
    ds = pydicom.dcmread(path)
    item = Dataset()
    item.add_new(0x00283002, "US", [4, 0, 16])  # LUTDescriptor
    item.ModalityLUTType = "US"
    item.add_new(0x00283006, "OW", np.array([0, 100, 2000, 4095], np.uint16).tobytes())  # LUTData
    ds.ModalityLUTSequence = Sequence([item])
    ds.save_as(path)
    result = _read(path)
    expected = np.array([0, 100, 2000, 4095, 4095]) / 4095 * 255
    np.testing.assert_allclose(_check(result, (1, 5))[0], expected, atol=1e-3)
    assert result.steps == ("modality_lut", "bit_range")


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit-vr", "explicit-vr"])
def test_bare_dataset_without_file_meta(tmp_path, implicit):
    # No preamble and no group 0002 (a raw dataset dump starting at group 0008): recognised by its first tag.
    import pydicom
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    stored = np.array([[0, 4095], [7, 2048]], np.uint16)
    ds = pydicom.dcmread(write_dicom(tmp_path / "a.dcm", stored, bits_stored=12))
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, implicit
    write_dataset(buffer, ds)
    data = buffer.getvalue()
    assert data[:2] == b"\x08\x00" and looks_like_dicom(data)
    np.testing.assert_allclose(_check(read_dicom(data, "dump", BUDGET), (2, 2)), stored / 4095 * 255, atol=1e-3)


def test_signed_16_bit_without_rescale_uses_the_signed_range(tmp_path):
    stored = np.array([[-32768, -1, 0, 32767]], np.int16)
    result = _read(write_dicom(tmp_path / "a.dcm", stored, signed=True))
    np.testing.assert_allclose(_check(result, (1, 4))[0], (stored[0] + 32768.0) / 65535 * 255, atol=1e-3)
