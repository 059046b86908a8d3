"""Patient demographics as metadata columns, de-identified the same way for every source.

Ages above 89 are reported as "90+" (the HIPAA Safe Harbor rule, 45 CFR 164.514(b)(2)(i)(C), groups them); the age
bands (``AGE_BANDS``: CheXpert's Age, ISIC's age_approx, DICOM PatientAge, ...) are the ones every source uses,
``meddiff/data/sources/tables.py`` ``age_band`` too. Sex is reduced to "M", "F" or "O" (the DICOM PatientSex values).
"""

from __future__ import annotations

AGE_BANDS = ((0, 40, "<40"), (40, 60, "40-59"), (60, 80, "60-79"), (80, 1000, "80+"))
OLDEST_REPORTED = 89
SEXES = {"M": "M", "F": "F", "O": "O", "MALE": "M", "FEMALE": "F", "OTHER": "O"}


def age_columns(years: float | None) -> dict[str, str]:
    """``{"age": "45", "age_band": "40-59"}`` for an age in whole years ("90+" above 89); {} for None."""
    if years is None:
        return {}
    whole = int(years)
    age = f"{OLDEST_REPORTED + 1}+" if whole > OLDEST_REPORTED else str(whole)
    band = next((name for low, high, name in AGE_BANDS if low <= whole < high), None)
    return {"age": age, **({"age_band": band} if band else {})}


def parse_age_years(text: str) -> float | None:
    """An age cell in years ("45", "45.0"): float, None when blank; ValueError when not a number in 0..150."""
    text = text.strip()
    if not text:
        return None
    value = float(text)
    if not 0 <= value <= 150:
        raise ValueError("out of range 0-150")
    return value


def sex_code(text: str | None) -> str | None:
    """"M", "F" or "O" for M/F/O/Male/Female/Other (any case); None for blank or anything else."""
    if text is None:
        return None
    return SEXES.get(str(text).strip().upper())
