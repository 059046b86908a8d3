"""What the ``dicom`` source keeps of a DICOM header: a hashed patient group and de-identified metadata, nothing else.

``read_header(path, date_precision)`` reads the header only (pydicom ``dcmread(stop_before_pixels=True)``) and returns
a ``DicomHeader``:
    group     ``"p-" + sha256(b"meddiff-patient-v1:" + PatientID).hexdigest()[:16]``: the same patient gives the same
              group on every machine, the PatientID itself never leaves this module; None when the file has no
              PatientID (the caller makes the file its own group and counts it)
    metadata  ``sex`` (M/F/O), ``age`` (whole years from PatientAge "045Y"/"006M"/"003W"/"010D"; above 89 "90+", the
              HIPAA Safe Harbor rule, see ``meddiff/data/demographics.py``), ``age_band``, ``view`` (ViewPosition),
              ``manufacturer``, ``body_part`` (BodyPartExamined), ``modality``, ``study_date`` (StudyDate cut to
              ``year`` (default), ``month`` or ``day``) and ``sop_instance_uid``; absent or blank attributes are
              left out.
Patient name, birth date, accession number, institution and patient id are never read into the result, and no error
message quotes a header value: errors name the file and the attribute only.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from meddiff.data.demographics import age_columns, sex_code
from meddiff.errors import ConfigError, DataError

DATE_PRECISIONS = ("year", "month", "day")
GROUP_SALT = b"meddiff-patient-v1:"
_AGE = re.compile(r"^(\d{1,3})([DWMY])$")
_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_PER_YEAR = {"D": 365.25, "W": 52.1775, "M": 12.0, "Y": 1.0}
# (DICOM keyword, metadata column) copied as stripped text
_TEXT = (("ViewPosition", "view"), ("Manufacturer", "manufacturer"), ("BodyPartExamined", "body_part"),
         ("Modality", "modality"))


@dataclass(frozen=True)
class DicomHeader:
    group: str | None
    sop_instance_uid: str | None
    metadata: dict[str, str] = field(default_factory=dict)


def patient_group(patient_id: str) -> str:
    """The group id of a PatientID: ``"p-"`` + the first 16 hex digits of its salted sha256."""
    return "p-" + hashlib.sha256(GROUP_SALT + patient_id.encode("utf-8")).hexdigest()[:16]


def has_dicom_magic(path: Path) -> bool:
    """True when the file holds b"DICM" at byte 128 (the DICOM Part 10 preamble)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_header(path: Path, date_precision: str = "year") -> DicomHeader:
    """The de-identified header of one DICOM file; DataError naming the file (never a value) when it cannot be read."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if date_precision not in DATE_PRECISIONS:
        raise ConfigError(f"data.params.date_precision: expected one of {list(DATE_PRECISIONS)}, "
                          f"got {date_precision!r}")
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=not has_dicom_magic(path))
        values = {k: _text(ds, k) for k in ("PatientID", "SOPInstanceUID", "PatientSex", "PatientAge", "StudyDate",
                                            *(k for k, _ in _TEXT))}
        known = any(values.values()) or "SOPClassUID" in ds
    except (InvalidDicomError, OSError, EOFError) as exc:
        raise DataError(f"{path}: unreadable DICOM header ({type(exc).__name__})") from None
    except Exception as exc:  # noqa: BLE001 - a corrupt header fails in many ways inside pydicom (struct, unicode...)
        raise DataError(f"{path}: unreadable DICOM header ({type(exc).__name__})") from None
    if not known:
        raise DataError(f"{path}: unreadable DICOM header (no DICOM attributes found; is it a DICOM file?)")
    meta: dict[str, str] = {}
    sex = sex_code(values["PatientSex"])
    if sex:
        meta["sex"] = sex
    meta.update(age_columns(_age_years(values["PatientAge"], path)))
    for keyword, column in _TEXT:
        if values[keyword]:
            meta[column] = values[keyword]
    if values["StudyDate"]:
        meta["study_date"] = _date(values["StudyDate"], date_precision, path)
    if values["SOPInstanceUID"]:
        meta["sop_instance_uid"] = values["SOPInstanceUID"]
    group = patient_group(values["PatientID"]) if values["PatientID"] else None
    return DicomHeader(group, values["SOPInstanceUID"] or None, meta)


def _text(ds, keyword: str) -> str:
    """The attribute as stripped text, from its raw bytes: pydicom's value conversion is bypassed because its
    validation warnings quote the value (an identifier must not reach a log)."""
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    element = ds.get_item(tag) if tag is not None and tag in ds else None
    value = None if element is None else element.value
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).strip(" \x00\t\r\n")


def _age_years(text: str, path: Path) -> float | None:
    if not text:
        return None
    match = _AGE.match(text)
    if not match:
        raise DataError(f"{path}: malformed PatientAge ({len(text)} characters); expected nnnD, nnnW, nnnM or nnnY "
                        "(DICOM AS), e.g. 045Y")
    return int(match.group(1)) / _PER_YEAR[match.group(2)]


def _date(text: str, precision: str, path: Path) -> str:
    match = _DATE.match(text)
    if not match:
        raise DataError(f"{path}: malformed StudyDate; expected YYYYMMDD (DICOM DA)")
    year, month, day = match.groups()
    return {"year": year, "month": f"{year}-{month}", "day": f"{year}-{month}-{day}"}[precision]
