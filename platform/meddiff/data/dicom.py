"""DICOM pixels -> display-ready pixels on the 0..255 scale, correct or refused (pydicom 3, pure functions, no torch).

A radiograph stored as DICOM is not an image yet: its stored values must go through the grayscale pipeline of the
standard (DICOM PS3.3 C.11 "Look Up Tables and Presentation States", C.7.6.3 "Image Pixel Module") before a human or a
model sees what the modality meant to show:

    1. refuse what this module cannot render correctly (multi-frame, missing pixel data, unsupported bit depth,
       photometric interpretation or transfer syntax, truncated pixel data) - the header is read and checked first
       (``read_dicom_header``, ``check_dicom_size``), so a header claiming 60000 x 60000 pixels costs nothing;
    2. stored values: BitsStored and PixelRepresentation (two's complement when signed) honoured by pydicom's decoder
       (PS3.3 C.7.6.3.1.1-1.3); the decoded array is checked against the declared range;
    3. Modality LUT (PS3.3 C.11.1): RescaleSlope / RescaleIntercept or a Modality LUT Sequence;
    4. VOI LUT (PS3.3 C.11.2): a VOI LUT Sequence if present, else the FIRST window (WindowCenter / WindowWidth may be
       multi-valued) with VOILUTFunction LINEAR (C.11.2.1.2.1), LINEAR_EXACT (C.11.2.1.3.2) or SIGMOID
       (C.11.2.1.3.1), mapped to [0, 1]; else no window: the *possible* range of the values after the modality LUT
       (from BitsStored, PixelRepresentation, slope and intercept, or the Modality LUT's entries) maps to [0, 1] -
       never the image's own min/max, which would stretch every image differently and hide contrast;
    5. MONOCHROME1 (PS3.3 C.7.6.3.1.2: minimum value is white): 1 - x after the VOI, so bone is bright as in
       MONOCHROME2;
    6. colour: YBR_FULL / YBR_FULL_422 -> RGB (PS3.3 C.7.6.3.1.2; pydicom's decoders convert some compressed syntaxes
       themselves, which is recorded), PALETTE COLOR -> RGB through its palette (C.7.6.3.1.5-6, C.7.9), RGB scaled by
       its BitsStored;
    7. x * 255 as float32, clipped to [0, 255], finite.

``DicomPixels.steps`` records what was applied, in order, for provenance: ``modality_lut``; one of ``voi_lut``,
``window`` (LINEAR), ``window_linear_exact``, ``window_sigmoid`` or ``bit_range`` (no VOI: the possible range); then
``invert`` (MONOCHROME1); for colour ``ybr_to_rgb`` or ``palette``, then ``bit_range``. The pipeline works in float32.
Every failure is a ``DataError`` whose message starts with ``where`` and says what was found, what was expected and
what to do.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.datadict import dictionary_has_tag
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, convert_color_space, get_decoder
from pydicom.uid import UID

from meddiff.errors import DataError

DICOM_MAGIC_OFFSET = 128  # b"DICM" at bytes 128..132 in a file with a preamble (PS3.10 7.1)
_MAGIC = b"DICM"
DICOM_HEAD_BYTES = DICOM_MAGIC_OFFSET + 4  # how many leading bytes looks_like_dicom needs to see the magic
_HEAD_BYTES = DICOM_HEAD_BYTES
_SUFFIXES = (".dcm", ".dicom")
_NO_PREAMBLE_GROUPS = (0x0002, 0x0008)  # file meta group, or a dataset starting with the identifying group

PHOTOMETRICS = ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR")
_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
_BITS_ALLOCATED = (1, 8, 16, 32)
_VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
_WINDOW_STEPS = {"LINEAR": "window", "LINEAR_EXACT": "window_linear_exact", "SIGMOID": "window_sigmoid"}

# Which pip package decodes which compressed transfer syntax (pydicom's own plugins; gdcm covers most of them too).
_DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg-libjpeg (or pillow)",
    "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.80": "pylibjpeg-libjpeg or pyjpegls",
    "1.2.840.10008.1.2.4.81": "pylibjpeg-libjpeg or pyjpegls",
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.201": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.202": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.5": "pylibjpeg-rle",
}


@dataclass(frozen=True)
class DicomPixels:
    """Display-ready pixels of one DICOM image and how they were made."""

    pixels: np.ndarray  # float32, [H, W] (grayscale) or [H, W, 3] (RGB), on the 0..255 display scale, never NaN
    steps: tuple[str, ...]  # what was applied, in order, e.g. ("modality_lut", "window", "invert")
    bits_stored: int
    photometric: str


def looks_like_dicom(head: bytes, name: str = "") -> bool:
    """True for a DICOM Part 10 file (b"DICM" at 128) or, without preamble, a file named *.dcm / *.dicom or whose
    first bytes are a group 0x0002 or 0x0008 little-endian element tag (PS3.10 7.1, PS3.5 7.1).

    Pass at least the first ``DICOM_HEAD_BYTES`` (132) bytes of the file, or the magic cannot be seen."""
    head = bytes(head[:_HEAD_BYTES])
    if head[DICOM_MAGIC_OFFSET:_HEAD_BYTES] == _MAGIC:
        return True
    if name.lower().endswith(_SUFFIXES):
        return True
    return len(head) >= 8 and int.from_bytes(head[:2], "little") in _NO_PREAMBLE_GROUPS


def read_dicom_header(source: Path | bytes, where: str) -> Dataset:
    """The dataset without its pixel data (``stop_before_pixels``); DataError if ``source`` is not DICOM."""
    return _read(source, where, stop_before_pixels=True)


def check_dicom_size(ds: Dataset, where: str, max_pixels: int) -> tuple[int, int]:
    """(width, height) of a single-frame image whose Rows * Columns * SamplesPerPixel is at most ``max_pixels``.

    Runs on the header alone (PS3.3 C.7.6.3: Rows, Columns, SamplesPerPixel; C.7.6.6: NumberOfFrames).
    """
    frames = _int_attr(ds, "NumberOfFrames", where, default=1)
    if frames > 1:
        raise DataError(
            f"{where}: multi-frame file with {frames} frames; expected a single-frame radiograph; split the frames "
            "first (one file per frame)"
        )
    rows = _int_attr(ds, "Rows", where)
    columns = _int_attr(ds, "Columns", where)
    samples = _int_attr(ds, "SamplesPerPixel", where, default=1)
    if rows < 1 or columns < 1:
        raise DataError(f"{where}: DICOM header says Rows={rows}, Columns={columns}; expected at least 1 x 1 pixels")
    if samples not in (1, 3):
        raise DataError(
            f"{where}: SamplesPerPixel is {samples}; expected 1 (grayscale) or 3 (colour); convert the image first"
        )
    total = rows * columns * samples
    if total > max_pixels:
        raise DataError(
            f"{where}: DICOM header says {columns} x {rows} pixels x {samples} samples = {total} values; expected at "
            f"most {max_pixels} (the decoder's pixel budget); downsample the image or raise the budget"
        )
    return columns, rows


def read_dicom(source: Path | bytes, where: str, max_pixels: int) -> DicomPixels:
    """Decode one single-frame DICOM image to display pixels; see the module docstring for the pipeline."""
    try:
        return _read_dicom(source, where, max_pixels)
    except DataError:
        raise
    except Exception as exc:  # a malformed element pydicom only parses on access (a 3-byte US, a bad sequence, ...)
        raise DataError(
            f"{where}: malformed DICOM file ({type(exc).__name__}: {exc}); expected a valid DICOM image; "
            "re-export it from the PACS"
        ) from None


def _read_dicom(source: Path | bytes, where: str, max_pixels: int) -> DicomPixels:
    header = read_dicom_header(source, where)
    check_dicom_size(header, where, max_pixels)
    photometric, bits_allocated, bits_stored, signed = _check_pixel_description(header, where)
    syntax = _check_transfer_syntax(header, where)
    ds = _read(source, where, stop_before_pixels=False, header_ok=True)
    if "PixelData" not in ds:
        others = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
        found = f"only {others[0]}" if others else "no PixelData element"
        raise DataError(f"{where}: {found}; expected an image with integer PixelData (7FE0,0010); is this an image?")
    if not syntax.is_compressed:
        _check_native_length(ds, where, bits_allocated)
    arr, decoded_photometric = _decode(ds, syntax, where)
    _check_stored_range(arr, where, bits_stored, signed)
    steps: list[str] = []
    if photometric in _MONOCHROME:
        x = _grayscale(arr, ds, where, bits_stored, signed, steps)
        if photometric == "MONOCHROME1":
            np.subtract(1.0, x, out=x)
            steps.append("invert")
    else:
        x = _colour(arr, ds, where, photometric, decoded_photometric, bits_stored, steps)
    x = np.asarray(x, dtype=np.float32)  # a no-op: every step above works in float32 (4 bytes per value)
    x *= 255.0
    out = np.clip(x, 0.0, 255.0, out=x)
    if not np.isfinite(out).all():
        raise DataError(f"{where}: pixel pipeline produced non-finite values; expected finite pixels (check the LUTs)")
    return DicomPixels(pixels=out, steps=tuple(steps), bits_stored=bits_stored, photometric=photometric)


# -- reading ----------------------------------------------------------------------------------------------------------


def _head(source: Path | bytes, where: str) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source[:_HEAD_BYTES]), ""
    path = Path(source)
    if not path.is_file():
        raise DataError(f"{where}: DICOM file does not exist; expected a file at {path} (check the data root)")
    try:
        with path.open("rb") as handle:
            return handle.read(_HEAD_BYTES), path.name
    except OSError as exc:
        raise DataError(
            f"{where}: cannot read the file ({type(exc).__name__}: {exc}); expected a readable file"
        ) from None


def _read(source: Path | bytes, where: str, *, stop_before_pixels: bool, header_ok: bool = False) -> Dataset:
    """Parse ``source``; ``header_ok`` says a header-only read already succeeded (so a dataset that comes back
    without Rows now ended inside the pixel data: pydicom returns an empty dataset for a cut encapsulated file)."""
    head, name = _head(source, where)
    if not looks_like_dicom(head, name):
        raise DataError(
            f"{where}: not a DICOM file (first bytes {head[:8]!r}, {len(head)} bytes read, no 'DICM' at byte "
            f"{DICOM_MAGIC_OFFSET}); expected a DICOM Part 10 file (.dcm)"
        )
    force = head[DICOM_MAGIC_OFFSET:_HEAD_BYTES] != _MAGIC
    stream = io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray, memoryview)) else Path(source)
    try:
        ds = pydicom.dcmread(stream, stop_before_pixels=stop_before_pixels, force=force)
        ds.get("Rows")  # force=True reads lazily enough that garbage can fail on the first access
    except Exception as exc:  # pydicom raises many kinds (InvalidDicomError, struct.error, EOFError, ValueError, ...)
        part = "the DICOM file after its header" if header_ok else "the DICOM header"
        problem = " (truncated or corrupt pixel data?)" if header_ok else ""
        raise DataError(
            f"{where}: cannot parse {part}{problem} ({type(exc).__name__}: {exc}); expected a complete DICOM Part 10 "
            "file; re-export it from the PACS"
        ) from None
    if "Rows" not in ds and "Columns" not in ds:
        if header_ok:
            raise DataError(
                f"{where}: pixel data is truncated: the file ends inside the pixel data (the header read fine); "
                "expected a complete file; re-copy or re-export it"
            )
        if force and not any(dictionary_has_tag(tag) for tag in ds.keys()):
            raise DataError(
                f"{where}: not a DICOM file (first bytes {head[:8]!r}, no 'DICM' at byte {DICOM_MAGIC_OFFSET} and no "
                "standard DICOM elements found); expected a DICOM Part 10 file (.dcm)"
            )
        raise DataError(
            f"{where}: DICOM file has no Rows / Columns (not an image, or not DICOM at all); expected an image "
            "(e.g. a radiograph); drop it from the manifest"
        )
    return ds


def _int_attr(ds: Dataset, keyword: str, where: str, default: int | None = None) -> int:
    try:
        value = ds.get(keyword)
    except Exception as exc:
        raise DataError(f"{where}: cannot read {keyword} ({type(exc).__name__}: {exc}); expected an integer") from None
    if value is None or value == "":
        if default is None:
            raise DataError(f"{where}: DICOM header has no {keyword}; expected an image with {keyword}")
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {keyword} is {value!r}; expected an integer") from None


def _check_pixel_description(ds: Dataset, where: str) -> tuple[str, int, int, bool]:
    """Photometric interpretation, BitsAllocated, BitsStored and signedness, refused unless supported (C.7.6.3.1)."""
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if photometric not in PHOTOMETRICS:
        raise DataError(
            f"{where}: PhotometricInterpretation {photometric or '(missing)'!r} is not supported; expected one of "
            f"{', '.join(PHOTOMETRICS)}; convert the image first"
        )
    samples = _int_attr(ds, "SamplesPerPixel", where, default=1)
    expected_samples = 1 if photometric in _MONOCHROME or photometric == "PALETTE COLOR" else 3
    if samples != expected_samples:
        raise DataError(
            f"{where}: PhotometricInterpretation {photometric} with SamplesPerPixel {samples}; expected "
            f"{expected_samples} (PS3.3 C.7.6.3.1.2)"
        )
    bits_allocated = _int_attr(ds, "BitsAllocated", where)
    if bits_allocated not in _BITS_ALLOCATED:
        raise DataError(f"{where}: BitsAllocated is {bits_allocated}; expected one of {_BITS_ALLOCATED}")
    bits_stored = _int_attr(ds, "BitsStored", where, default=bits_allocated)
    if not 1 <= bits_stored <= bits_allocated:
        raise DataError(
            f"{where}: BitsStored is {bits_stored} with BitsAllocated {bits_allocated}; expected 1 <= BitsStored <= "
            "BitsAllocated; the header is inconsistent, re-export the file"
        )
    representation = _int_attr(ds, "PixelRepresentation", where, default=0)
    if representation not in (0, 1):
        raise DataError(f"{where}: PixelRepresentation is {representation}; expected 0 (unsigned) or 1 (signed)")
    if photometric not in _MONOCHROME and representation == 1:
        raise DataError(f"{where}: signed {photometric} pixels; expected unsigned colour samples (C.7.6.3.1)")
    return photometric, bits_allocated, bits_stored, representation == 1


def _check_transfer_syntax(ds: Dataset, where: str) -> UID:
    meta = getattr(ds, "file_meta", None)
    syntax = UID(str(meta.get("TransferSyntaxUID", "") or "")) if meta is not None else UID("")
    if not syntax:
        # A file without meta information (no preamble, or a bare dataset): pydicom guesses the encoding.
        syntax = UID("1.2.840.10008.1.2.1" if not ds.is_implicit_VR else "1.2.840.10008.1.2")
        ds.file_meta = getattr(ds, "file_meta", None) or pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = syntax
    label = f"{syntax} ({syntax.name})" if syntax.name != str(syntax) else f"{syntax} (unknown to pydicom)"
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise DataError(
            f"{where}: transfer syntax {label} has no pixel data decoder; expected uncompressed, RLE, JPEG or "
            "JPEG 2000 pixel data; convert the file (e.g. `gdcmconv --raw`) or install python-gdcm if it decodes it"
        ) from None
    if not decoder.is_available:
        package = _DECODER_PACKAGES.get(str(syntax), "python-gdcm")
        raise DataError(
            f"{where}: transfer syntax {label} needs a decoder that is not installed; expected it to be decodable; "
            f"`pip install {package}` (or convert the file to uncompressed)"
        )
    return syntax


def _check_native_length(ds: Dataset, where: str, bits_allocated: int) -> None:
    """Uncompressed pixel data must hold Rows * Columns * SamplesPerPixel values of BitsAllocated bits (C.7.6.3.1.4)."""
    values = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1)
    if str(ds.PhotometricInterpretation).strip().upper() == "YBR_FULL_422":
        values = values * 2 // 3  # two luma samples share one Cb and one Cr (PS3.3 C.7.6.3.1.2)
    expected = math.ceil(values * bits_allocated / 8)
    found = len(ds.PixelData)
    if found < expected:
        raise DataError(
            f"{where}: pixel data is truncated: {found} bytes, expected {expected} for {ds.Columns} x {ds.Rows} "
            f"pixels at {bits_allocated} bits; re-copy or re-export the file"
        )


def _decode(ds: Dataset, syntax: UID, where: str) -> tuple[np.ndarray, str]:
    """Stored values as pydicom decodes them, and the photometric interpretation they are in after decoding."""
    try:
        arr, meta = get_decoder(syntax).as_array(ds)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # plugins raise anything on corrupt data, pylibjpeg-rle even a Rust PanicException
        raise DataError(
            f"{where}: cannot decode the pixel data ({type(exc).__name__}: {exc}); expected complete pixel data "
            f"encoded as its transfer syntax {syntax} ({syntax.name}) says; re-export the file"
        ) from None
    return np.asarray(arr), str(meta.get("photometric_interpretation", ds.PhotometricInterpretation))


def _stored_range(bits_stored: int, signed: bool) -> tuple[int, int]:
    """The values BitsStored bits can hold: [0, 2^n - 1], or two's complement [-2^(n-1), 2^(n-1) - 1] (C.7.6.3.1.1)."""
    if signed:
        return -(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1
    return 0, (1 << bits_stored) - 1


def _check_stored_range(arr: np.ndarray, where: str, bits_stored: int, signed: bool) -> None:
    low, high = _stored_range(bits_stored, signed)
    if arr.size and (arr.min() < low or arr.max() > high):
        raise DataError(
            f"{where}: decoded values span {arr.min()}..{arr.max()}, outside {low}..{high} that BitsStored "
            f"{bits_stored} ({'signed' if signed else 'unsigned'}) allows; the header is inconsistent, "
            "re-export the file"
        )


# -- grayscale: Modality LUT, VOI LUT (C.11.1, C.11.2) ----------------------------------------------------------------


def _grayscale(
    arr: np.ndarray, ds: Dataset, where: str, bits_stored: int, signed: bool, steps: list[str]
) -> np.ndarray:
    low, high = _stored_range(bits_stored, signed)
    values = arr.astype(np.float32)
    if "ModalityLUTSequence" in ds or "RescaleSlope" in ds or "RescaleIntercept" in ds:
        values, low, high = _modality(arr, ds, where, low, high)
        steps.append("modality_lut")
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        steps.append("voi_lut")
        return _voi_lut(values, ds, where)
    window = _first_window(ds, where)
    if window is not None:
        steps.append(_WINDOW_STEPS[window[2]])
        return _window(values, *window)
    steps.append("bit_range")
    if high <= low:
        return np.zeros_like(values)
    values -= low
    values /= high - low
    return values


def _modality(arr: np.ndarray, ds: Dataset, where: str, low: float, high: float) -> tuple[np.ndarray, float, float]:
    """Apply the Modality LUT (C.11.1) and return the values and the range the stored range maps to."""
    if "ModalityLUTSequence" in ds:
        try:
            values = apply_modality_lut(arr, ds).astype(np.float32)
            entries, first = (int(v) for v in ds.ModalityLUTSequence[0].LUTDescriptor[:2])
            # The values a LUT can produce are its entries (0 entries means 2^16, C.11.1.1.1).
            table = apply_modality_lut(np.arange(first, first + (entries or 1 << 16), dtype=np.int64), ds)
        except Exception as exc:
            raise DataError(
                f"{where}: cannot apply the Modality LUT Sequence ({type(exc).__name__}: {exc}); expected a valid "
                "LUT with 8- or 16-bit entries (PS3.3 C.11.1.1)"
            ) from None
        return values, float(table.min()), float(table.max())
    slope = _float_attr(ds, "RescaleSlope", where, 1.0)
    intercept = _float_attr(ds, "RescaleIntercept", where, 0.0)
    if slope == 0:
        raise DataError(f"{where}: RescaleSlope is 0 (every pixel the same value); expected a non-zero slope")
    values = arr.astype(np.float32)
    values *= slope
    values += intercept
    ends = (low * slope + intercept, high * slope + intercept)
    return values, min(ends), max(ends)


def _float_attr(ds: Dataset, keyword: str, where: str, default: float) -> float:
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    if isinstance(value, pydicom.multival.MultiValue):
        value = value[0] if len(value) else default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {keyword} is {value!r}; expected a number") from None
    if not math.isfinite(number):
        raise DataError(f"{where}: {keyword} is {value!r}; expected a finite number")
    return number


def _first_window(ds: Dataset, where: str) -> tuple[float, float, str] | None:
    """The FIRST (centre, width, function) of a possibly multi-valued window (C.11.2.1.2), or None without one."""
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    centre = _float_attr(ds, "WindowCenter", where, math.nan)
    width = _float_attr(ds, "WindowWidth", where, math.nan)
    if math.isnan(centre) or math.isnan(width):
        return None
    function = str(ds.get("VOILUTFunction", "") or "LINEAR").strip().upper()
    if function not in _VOI_FUNCTIONS:
        raise DataError(f"{where}: VOILUTFunction {function!r} is not supported; expected one of {_VOI_FUNCTIONS}")
    minimum = 1.0 if function == "LINEAR" else 0.0
    if width < minimum or width == 0:
        raise DataError(
            f"{where}: WindowWidth is {width:g}; expected {'>= 1' if function == 'LINEAR' else '> 0'} for "
            f"VOILUTFunction {function} (PS3.3 C.11.2.1.2); fix or remove the window"
        )
    return centre, width, function


def _window(x: np.ndarray, centre: float, width: float, function: str) -> np.ndarray:
    """A window mapped to [0, 1] (PS3.3 C.11.2.1.2.1 LINEAR, C.11.2.1.3.2 LINEAR_EXACT, C.11.2.1.3.1 SIGMOID)."""
    if function == "SIGMOID":
        exponent = np.clip(x - centre, -20.0 * width, 20.0 * width)  # exp(80) still fits in float32
        exponent *= -4.0 / width
        return 1.0 / (1.0 + np.exp(exponent))
    if function == "LINEAR_EXACT":
        y = x - centre
        y /= width
        y += 0.5
        return np.clip(y, 0.0, 1.0, out=y)
    # LINEAR: x <= c - 0.5 - (w-1)/2 -> 0; x > c - 0.5 + (w-1)/2 -> 1; else ((x - (c - 0.5)) / (w-1) + 0.5).
    # For w > 1 the middle expression is <= 0 exactly when x <= the lower bound and > 1 exactly above the upper one,
    # so clipping it to [0, 1] is the same function with one temporary instead of three.
    if width == 1.0:
        return (x > centre - 0.5).astype(np.float32)
    y = x - (centre - 0.5)
    y /= width - 1.0
    y += 0.5
    return np.clip(y, 0.0, 1.0, out=y)


def _voi_lut(values: np.ndarray, ds: Dataset, where: str) -> np.ndarray:
    """The first VOI LUT of the sequence (C.11.2.1.1), scaled by its output bits (LUTDescriptor[2]) to [0, 1]."""
    try:
        item = ds.VOILUTSequence[0]
        out_bits = int(item.LUTDescriptor[2])
        # apply_voi_lut indexes the LUT by the (modality-transformed) value; it expects integers.
        mapped = apply_voi_lut(np.rint(values).astype(np.int64), ds, index=0, prefer_lut=True).astype(np.float32)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(
            f"{where}: cannot apply the VOI LUT Sequence ({type(exc).__name__}: {exc}); expected a valid LUT "
            "(PS3.3 C.11.2.1.1)"
        ) from None
    if not 8 <= out_bits <= 16:
        raise DataError(f"{where}: VOI LUT entries of {out_bits} bits; expected 8..16 (PS3.3 C.11.2.1.1)")
    return mapped / float((1 << out_bits) - 1)


# -- colour (C.7.6.3.1.2, C.7.6.3.1.5) --------------------------------------------------------------------------------


def _colour(
    arr: np.ndarray, ds: Dataset, where: str, photometric: str, decoded: str, bits_stored: int, steps: list[str]
) -> np.ndarray:
    if photometric == "PALETTE COLOR":
        try:
            rgb = apply_color_lut(arr, ds)
            bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        except Exception as exc:
            raise DataError(
                f"{where}: cannot apply the palette ({type(exc).__name__}: {exc}); expected Red/Green/Blue Palette "
                "Color Lookup Tables (PS3.3 C.7.9)"
            ) from None
        steps.append("palette")
        return rgb.astype(np.float32) / float((1 << (16 if bits == 16 else 8)) - 1)
    if photometric.startswith("YBR"):
        if decoded.startswith("YBR"):
            arr = convert_color_space(arr, decoded, "RGB")
        steps.append("ybr_to_rgb")
    low, high = _stored_range(bits_stored, False)
    steps.append("bit_range")
    return arr.astype(np.float32) / high
