"""Exceptions with messages that say what was wrong and how to fix it."""

from __future__ import annotations


class MeddiffError(Exception):
    """Base class: every error meddiff raises on purpose derives from it."""


class ConfigError(MeddiffError):
    """A configuration file or value is invalid (unknown key, wrong type, out of range)."""


class DataError(MeddiffError):
    """Input data is invalid: a missing file, an undecodable image, an unknown label, a duplicate id.

    The message always names the file and, where there is one, the row.
    """


class CheckpointError(MeddiffError):
    """A checkpoint bundle is missing, incomplete or incompatible with the request."""


class ResultsError(MeddiffError):
    """A results folder cannot be written or read as asked (planned for other rows, foreign files, bad schema)."""


class ImageFormatError(DataError):
    """An input file is of a kind meddiff does not read (GIF, PDF, EPS, text, ...): refused before any plugin decodes it.

    The HTTP endpoint answers it with 415; everything else about a bad image is a plain ``DataError`` (422)."""


class ResultsFolderInUse(ResultsError):
    """A results folder holds rows scored with another checkpoint or other settings (its fingerprint differs)."""


class TrackingError(MeddiffError):
    """The MLflow tracking store of ``tracking.uri`` cannot be opened or refuses a run (``meddiff.tracking``)."""
