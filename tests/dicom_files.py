"""Write small DICOM files with pydicom for the tests (no DICOM file is checked in; every test builds its own).

``write_dicom(path, pixels, ...)`` stores ``pixels`` (stored values, [H, W] or [frames, H, W] or [H, W, 3]) with the
attributes a radiograph carries: photometric interpretation, bits allocated/stored, rescale slope/intercept, window
centre/width or a VOI LUT sequence, and the patient/study tags the ``dicom`` source reads (including identifiers that
must never reach results). ``transfer_syntax`` picks an uncompressed or a compressed encoding (RLE is encoded by
pydicom itself; JPEG 2000 needs pylibjpeg-openjpeg).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless, SecondaryCaptureImageStorage, UID, generate_uid,
)

COMPRESSED = {"rle": RLELossless, "jpeg2000": JPEG2000Lossless}


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    bits_stored: int | None = None,
    photometric: str | None = None,
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | None = None,
    voi_lut: Sequence[int] | None = None,
    voi_lut_first: int = 0,
    voi_lut_bits: int = 16,
    signed: bool = False,
    compression: str | None = None,
    patient_id: str | None = "PAT-0001",
    patient_name: str | None = "Doe^Jane",
    birth_date: str | None = "19700101",
    sex: str | None = "F",
    age: str | None = "045Y",
    view: str | None = "PA",
    manufacturer: str | None = "ACME Imaging",
    body_part: str | None = "CHEST",
    modality: str = "DX",
    study_date: str | None = "20200315",
    sop_instance_uid: str | None = None,
    accession: str | None = "ACC123456",
    institution: str | None = None,
    add_preamble: bool = True,
) -> Path:
    """Write ``pixels`` as a DICOM file at ``path`` and return the path; see the module docstring."""
    pixels = np.asarray(pixels)
    colour = pixels.ndim == 3 and pixels.shape[-1] == 3
    frames = pixels.shape[0] if pixels.ndim == 3 and not colour else 1
    rows, cols = (pixels.shape[-3], pixels.shape[-2]) if colour else (pixels.shape[-2], pixels.shape[-1])
    bits_allocated = 8 if pixels.dtype.itemsize == 1 else 16
    if pixels.dtype.itemsize > 2:
        raise ValueError(f"write_dicom: pixels must be 8- or 16-bit integers, got {pixels.dtype}")

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid or generate_uid())
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    optional = {
        "PatientID": patient_id, "PatientName": patient_name, "PatientBirthDate": birth_date, "PatientSex": sex,
        "PatientAge": age, "ViewPosition": view, "Manufacturer": manufacturer, "BodyPartExamined": body_part,
        "StudyDate": study_date, "AccessionNumber": accession,
        "InstitutionName": institution,
    }
    for keyword, value in optional.items():
        if value is not None:
            setattr(ds, keyword, value)
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = photometric or ("RGB" if colour else "MONOCHROME2")
    if colour:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored or bits_allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if slope is not None or intercept is not None:
        ds.RescaleSlope = slope if slope is not None else 1
        ds.RescaleIntercept = intercept if intercept is not None else 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_lut is not None:
        item = Dataset()
        item.LUTDescriptor = [len(voi_lut), voi_lut_first, voi_lut_bits]
        item.add_new(0x00283006, "OW", np.asarray(voi_lut, dtype=np.uint16).tobytes())  # LUTData
        ds.VOILUTSequence = DicomSequence([item])
    dtype = {(8, False): np.uint8, (8, True): np.int8, (16, False): np.uint16, (16, True): np.int16}
    ds.PixelData = np.ascontiguousarray(pixels.astype(dtype[bits_allocated, signed])).tobytes()
    if compression is not None:
        ds.compress(COMPRESSED[compression], generate_instance_uid=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=add_preamble)
    return path
