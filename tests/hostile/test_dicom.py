"""Hostile DICOM input: every kind is refused with a DataError that names the file, what was found and what was
expected, never a pydicom / numpy exception; the next (good) file still decodes."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate

import meddiff.data.dicom as dicom
from meddiff.data.dicom import check_dicom_size, read_dicom, read_dicom_header
from meddiff.errors import DataError
from tests.dicom_files import write_dicom

DICOM_OFFSET = dicom.DICOM_MAGIC_OFFSET
WHERE = "scans/a.dcm (manifest id 'a')"
BUDGET = 10**6


def _good(tmp_path):
    return write_dicom(tmp_path / "good.dcm", np.array([[0, 4095], [1000, 2000]], np.uint16), bits_stored=12)


def _edit(tmp_path, edit, **kwargs):
    """Write a good file, change its dataset with ``edit(ds)`` and save it again (as a file, not re-encoded)."""
    path = _good(tmp_path) if not kwargs else write_dicom(tmp_path / "base.dcm", **kwargs)
    ds = pydicom.dcmread(path)
    edit(ds)
    out = tmp_path / "bad.dcm"
    ds.save_as(out)
    return out


def _set(**values):
    def edit(ds):
        for key, value in values.items():
            setattr(ds, key, value)

    return edit


def _delete(keyword):
    def edit(ds):
        delattr(ds, keyword)

    return edit


def _jpeg_ls_on_raw(ds):
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.80"  # JPEG-LS Lossless, but the bytes are not JPEG-LS
    ds.PixelData = encapsulate([ds.PixelData])


def _made_up_syntax(tmp_path):
    # Same length as "1.2.840.10008.1.2.1" (explicit VR little endian), so the file stays well formed.
    data = _good(tmp_path).read_bytes().replace(b"1.2.840.10008.1.2.1\0", b"1.2.840.99999.9.9.9\0", 1)
    return data


def _png_bytes(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _png_named_dcm(tmp_path):
    path = tmp_path / "fake.dcm"
    path.write_bytes(_png_bytes(tmp_path) * 20)
    return path


def _native_cut(tmp_path):
    return _good(tmp_path).read_bytes()[:-3]


def _short_pixel_element(tmp_path):
    return _edit(tmp_path, _set(PixelData=b"\0" * 6))


def _rle_cut(tmp_path):
    stored = np.arange(1024, dtype=np.uint16).reshape(32, 32)
    return write_dicom(tmp_path / "rle.dcm", stored, compression="rle").read_bytes()[:-40]


def _rle_garbage(tmp_path):
    path = write_dicom(tmp_path / "rle.dcm", np.arange(1024, dtype=np.uint16).reshape(32, 32), compression="rle")
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([b"\x01\x00\x00\x00" + b"\xff" * 60])  # an RLE header claiming 1 segment, no offsets
    ds.save_as(path)
    return path


def _not_an_image(tmp_path):
    ds = pydicom.dcmread(_good(tmp_path))
    for keyword in ("Rows", "Columns", "PixelData", "BitsAllocated", "BitsStored", "HighBit"):
        delattr(ds, keyword)
    path = tmp_path / "report.dcm"
    ds.save_as(path)
    return path


def _modality_lut_12_bit(ds):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.add_new(0x00283002, "US", [4, 0, 12])  # LUTDescriptor: 12-bit entries, but C.11.1.1.1 allows 8 or 16
    item.ModalityLUTType = "US"
    item.add_new(0x00283006, "OW", np.array([0, 1, 2, 3], np.uint16).tobytes())
    ds.ModalityLUTSequence = Sequence([item])


CASES = [
    ("multi-frame", lambda t: write_dicom(t / "f.dcm", np.zeros((3, 4, 4), np.uint16)),
     ["multi-frame file with 3 frames", "single-frame", "split the frames"]),
    ("no-pixel-data", lambda t: _edit(t, _delete("PixelData")), ["no PixelData", "expected"]),
    ("bits-stored-above-allocated", lambda t: _edit(t, _set(BitsStored=20, HighBit=19)),
     ["BitsStored is 20 with BitsAllocated 16", "expected 1 <= BitsStored <= BitsAllocated"]),
    ("bits-allocated-12", lambda t: _edit(t, _set(BitsAllocated=12)), ["BitsAllocated is 12", "expected one of"]),
    ("photometric-hsv", lambda t: _edit(t, _set(PhotometricInterpretation="HSV")),
     ["PhotometricInterpretation 'HSV' is not supported", "MONOCHROME2"]),
    ("photometric-missing", lambda t: _edit(t, _delete("PhotometricInterpretation")),
     ["'(missing)'", "expected one of"]),
    ("samples-per-pixel-4", lambda t: _edit(t, _set(SamplesPerPixel=4)), ["SamplesPerPixel is 4", "expected 1"]),
    ("rgb-with-one-sample", lambda t: _edit(t, _set(PhotometricInterpretation="RGB")),
     ["RGB with SamplesPerPixel 1", "expected 3"]),
    ("jpeg-ls-uid-on-raw-data", lambda t: _edit(t, _jpeg_ls_on_raw),
     ["cannot decode the pixel data", "1.2.840.10008.1.2.4.80", "JPEG-LS"]),
    ("made-up-transfer-syntax", _made_up_syntax,
     ["transfer syntax 1.2.840.99999.9.9.9", "has no pixel data decoder", "expected uncompressed"]),
    ("native-file-cut-short", _native_cut, ["pixel data is truncated", "expected 8"]),
    ("pixel-element-too-short", _short_pixel_element, ["pixel data is truncated: 6 bytes, expected 8"]),
    ("rle-file-cut-short", _rle_cut, ["pixel data is truncated", "the file ends inside the pixel data"]),
    ("rle-garbage", _rle_garbage, ["cannot decode the pixel data", "RLE Lossless"]),
    ("png-bytes", _png_bytes, ["not a DICOM file", "PNG", "expected a DICOM Part 10 file"]),
    ("png-named-dcm", _png_named_dcm, ["not a DICOM file", "PNG", "no standard DICOM elements found"]),
    ("text", lambda t: b"id,label\nimg1,0\n", ["not a DICOM file", "expected a DICOM Part 10 file"]),
    ("empty", lambda t: b"", ["not a DICOM file", "0 bytes read"]),
    ("missing-file", lambda t: t / "nowhere.dcm", ["does not exist", "check the data root"]),
    ("not-an-image", _not_an_image, ["no Rows / Columns", "expected an image"]),
    ("window-width-0", lambda t: _edit(t, _set(WindowCenter=100, WindowWidth=0)),
     ["WindowWidth is 0", "expected >= 1", "C.11.2.1.2"]),
    ("window-width-negative", lambda t: _edit(t, _set(WindowCenter=100, WindowWidth=-50)), ["WindowWidth is -50"]),
    ("window-exact-width-0", lambda t: _edit(t, _set(WindowCenter=100, WindowWidth=0, VOILUTFunction="LINEAR_EXACT")),
     ["WindowWidth is 0", "expected > 0 for VOILUTFunction LINEAR_EXACT"]),
    ("voi-function-unknown", lambda t: _edit(t, _set(WindowCenter=100, WindowWidth=10, VOILUTFunction="LOG")),
     ["VOILUTFunction 'LOG' is not supported"]),
    ("rescale-slope-0", lambda t: _edit(t, _set(RescaleSlope=0, RescaleIntercept=0)), ["RescaleSlope is 0"]),
    ("modality-lut-12-bit-entries", lambda t: _edit(t, _modality_lut_12_bit),
     ["cannot apply the Modality LUT Sequence", "expected a valid LUT with 8- or 16-bit entries"]),
    ("zero-rows", lambda t: _edit(t, _set(Rows=0)), ["Rows=0", "expected at least 1 x 1"]),
]


@pytest.mark.parametrize("build, fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_dicom_is_refused_with_a_message(tmp_path, build, fragments):
    source = build(tmp_path)
    with pytest.raises(DataError) as info:
        read_dicom(source, WHERE, BUDGET)
    message = str(info.value)
    assert message.startswith(WHERE + ": "), message
    for fragment in fragments:
        assert fragment in message, message
    # the job goes on: the next file decodes
    assert read_dicom(_good(tmp_path), WHERE, BUDGET).pixels.max() == 255


def test_huge_header_is_refused_before_any_pixel_data_is_read_or_decoded(tmp_path, monkeypatch):
    path = _edit(tmp_path, _set(Rows=60000, Columns=60000))

    def no_decode(*args, **kwargs):
        raise AssertionError("pixel data was decoded before the size check")

    monkeypatch.setattr(dicom, "_decode", no_decode)
    monkeypatch.setattr(dicom, "get_decoder", no_decode)
    with pytest.raises(DataError, match=r"60000 x 60000 pixels x 1 samples = 3600000000 values; expected at most"):
        read_dicom(path, WHERE, BUDGET)
    header = read_dicom_header(path, WHERE)
    assert "PixelData" not in header
    with pytest.raises(DataError, match="pixel budget"):
        check_dicom_size(header, WHERE, BUDGET)


def test_multi_frame_refused_from_the_header(tmp_path):
    header = read_dicom_header(write_dicom(tmp_path / "f.dcm", np.zeros((2, 4, 4), np.uint8)), WHERE)
    with pytest.raises(DataError, match="multi-frame file with 2 frames"):
        check_dicom_size(header, WHERE, BUDGET)


def test_syntax_whose_decoder_is_not_installed_names_the_package(tmp_path, monkeypatch):
    path = write_dicom(tmp_path / "j.dcm", np.zeros((32, 32), np.uint8), compression="jpeg2000")

    class Missing:
        is_available = False

    monkeypatch.setattr(dicom, "get_decoder", lambda uid: Missing())
    with pytest.raises(DataError) as info:
        read_dicom(path, WHERE, BUDGET)
    message = str(info.value)
    assert "JPEG 2000 Image Compression (Lossless Only)" in message and "pip install pylibjpeg-openjpeg" in message


def test_pixel_values_outside_bits_stored_after_decoding_are_refused(tmp_path, monkeypatch):
    # A decoder plugin that did not mask the bits above HighBit would give values BitsStored cannot hold.
    real = dicom._decode
    def unmasked(ds, syntax, where):
        return real(ds, syntax, where)[0] | 0x8000, "MONOCHROME2"

    monkeypatch.setattr(dicom, "_decode", unmasked)
    with pytest.raises(DataError, match=r"outside 0..4095 that BitsStored 12 \(unsigned\) allows"):
        read_dicom(_good(tmp_path), WHERE, BUDGET)


@pytest.mark.parametrize("compression", [None, "rle"], ids=["native", "rle"])
def test_corrupted_bytes_give_pixels_or_a_data_error(tmp_path, compression):
    # Seeded random corruption of 1-3 bytes after the preamble, anywhere in the header or the pixel data: each read
    # either gives valid display pixels or a DataError naming the file, never a pydicom / numpy / Rust exception.
    stored = np.arange(1024, dtype=np.uint16).reshape(32, 32) * 4
    kwargs = {"bits_stored": 12, "window": (2000, 1000), "slope": 1, "intercept": -10, "compression": compression}
    original = write_dicom(tmp_path / "base.dcm", stored, **kwargs).read_bytes()
    rng = np.random.default_rng(1234)
    outcomes = {"pixels": 0, "refused": 0}
    for _ in range(150):
        data = bytearray(original)
        for position in rng.integers(DICOM_OFFSET, len(data), size=rng.integers(1, 4)):
            data[position] = rng.integers(0, 256)
        try:
            result = read_dicom(bytes(data), WHERE, BUDGET)
        except DataError as exc:
            assert str(exc).startswith(WHERE + ": ")
            outcomes["refused"] += 1
        else:
            assert result.pixels.dtype == np.float32 and np.isfinite(result.pixels).all()
            assert result.pixels.min() >= 0 and result.pixels.max() <= 255
            outcomes["pixels"] += 1
    assert outcomes["refused"] > 0 and outcomes["pixels"] > 0
