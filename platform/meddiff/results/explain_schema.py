"""The explanation index schema: the single source of column names for ``<out>/index/shard-*.parquet``.

One row per (image, target class): the reconstruction of the image under that class, its difference map to the input,
and the reconstruction error. The row whose class is the true label is the *factual*; the others are counterfactuals.
Paths are relative to the explanation folder, so the folder can be moved or served as is.
"""

from __future__ import annotations

import pyarrow as pa

# provenance and status columns mean the same as in the results schema
from meddiff.results import schema as _results
from meddiff.results.schema import CODE_VERSION, ERROR, MODEL_ID, STATUS, check_against, rows_to_table

STATUS_OK, STATUS_ERROR = _results.STATUS_OK, _results.STATUS_ERROR

IMAGE_ID = "image_id"
LABEL = "label"  # true class index (-1 unknown)
LABEL_NAME = "label_name"
PRED = "pred"  # the scored prediction (results set's pred column)
UNCERTAINTY = "uncertainty"  # the scored uncertainty
REASON = "reason"  # why the image was selected: uncertain | certain | error | id | all
CLASS = "class"  # target class index of this reconstruction
CLASS_NAME = "class_name"
FACTUAL = "factual"  # class == label
T_START = "t_start"
STEPS = "steps"
GUIDANCE = "w"
SEED = "seed"
INPUT_PNG = "input_png"
RECON_PNG = "reconstruction_png"
DIFF_PNG = "difference_png"
RECON_ERROR = "reconstruction_error"  # mean squared pixel difference, images in [-1, 1]
DIFF_MODE = "difference_mode"  # signed (grayscale) | absolute (colour)
DIFF_SCALE = "difference_scale"  # colour-scale limit of the image's difference maps (pixel units, images in [-1, 1])


SCHEMA = pa.schema(
    [
        pa.field(IMAGE_ID, pa.string(), nullable=False),
        pa.field(LABEL, pa.int32()),
        pa.field(LABEL_NAME, pa.string()),
        pa.field(PRED, pa.int32()),
        pa.field(UNCERTAINTY, pa.float32()),
        pa.field(REASON, pa.string()),
        pa.field(CLASS, pa.int32()),
        pa.field(CLASS_NAME, pa.string()),
        pa.field(FACTUAL, pa.bool_()),
        pa.field(T_START, pa.float32()),
        pa.field(STEPS, pa.int32()),
        pa.field(GUIDANCE, pa.float32()),
        pa.field(SEED, pa.int64()),
        pa.field(INPUT_PNG, pa.string()),
        pa.field(RECON_PNG, pa.string()),
        pa.field(DIFF_PNG, pa.string()),
        pa.field(RECON_ERROR, pa.float32()),
        pa.field(DIFF_MODE, pa.string()),
        pa.field(DIFF_SCALE, pa.float32()),
        pa.field(MODEL_ID, pa.string()),
        pa.field(STATUS, pa.string(), nullable=False),
        pa.field(ERROR, pa.string()),
        pa.field(CODE_VERSION, pa.string()),
    ]
)

COLUMNS = tuple(SCHEMA.names)


def to_table(rows: list[dict]) -> pa.Table:
    """Rows keyed by schema columns (missing keys become null) -> a table with exactly SCHEMA; unknown keys are errors."""
    return rows_to_table(rows, SCHEMA, "explanation")


def check_table(table: pa.Table, where: str = "explanation index") -> None:
    """Raise ValueError naming the column when ``table`` does not carry SCHEMA's columns and types."""
    check_against(table, SCHEMA, where, "meddiff.results.explain_schema")
