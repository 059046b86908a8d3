"""The results schema: the single source of column names for every results parquet.

One row per scored image. Diffusion classifiers fill the vote columns; discriminative baselines leave them null and put
their softmax in ``prob``. A row that could not be scored has status "error", a message in ``error`` and nulls elsewhere.
"""

from __future__ import annotations

import pyarrow as pa

IMAGE_ID = "image_id"
LABEL = "label"  # true class index, -1 when unknown (serving, unlabelled cohorts)
LABEL_NAME = "label_name"
SPLIT = "split"
SOURCE = "source"
GROUP = "group"  # patient / lesion / site id the image belongs to; the image id itself when the source has no groups
METADATA = "metadata"  # JSON object of the manifest's metadata columns (sex, age band, view, site, batch, ...), "{}"
FOLD = "fold"  # cross-validation fold of an out-of-fold row (``meddiff cv``), null otherwise
PRED = "pred"  # prediction of the configured rule
PRED_NAME = "pred_name"
PRED_VOTE = "pred_vote"
PRED_AVERAGE = "pred_average"
VOTES = "votes"  # per-class vote counts
PROB = "prob"  # per-class probability: vote share (diffusion) or softmax (baseline)
MEAN_ERROR = "mean_error"  # per-class mean error over draws (diffusion)
UNCERTAINTY = "uncertainty"  # normalised entropy of PROB, in [0, 1]
DECISION = "decision"  # "accept" | "refer" at a risk-controlled uncertainty threshold; null when none was applied
REFER_THRESHOLD = "refer_threshold"  # the uncertainty threshold: accept when uncertainty <= it
RISK_ALPHA = "risk_alpha"  # the error rate among accepted images the threshold controls ...
RISK_DELTA = "risk_delta"  # ... with probability at least 1 - delta over the calibration set
N_DRAWS = "n_draws"  # draws used for this image
NFE = "nfe"  # denoiser (or network) evaluations used for this image
DRAW_ERRORS = "draw_errors"  # [C][N] per-draw errors (optional)
DRAW_T = "draw_t"  # [N] the draws' t (optional)
METHOD = "method"
RULE = "rule"
MODEL_ID = "model_id"
SEED = "seed"
STATUS = "status"  # "ok" | "error"
ERROR = "error"
PREPROCESS = "preprocess"  # what the decoder did to the image, e.g. "PNG 300x512; bits 12 (sBIT); pad 300x512 -> 64"
CODE_VERSION = "code_version"

STATUS_OK = "ok"
STATUS_ERROR = "error"

SCHEMA = pa.schema(
    [
        pa.field(IMAGE_ID, pa.string(), nullable=False),
        pa.field(LABEL, pa.int32()),
        pa.field(LABEL_NAME, pa.string()),
        pa.field(SPLIT, pa.string()),
        pa.field(SOURCE, pa.string()),
        pa.field(GROUP, pa.string()),
        pa.field(METADATA, pa.string()),
        pa.field(FOLD, pa.int32()),
        pa.field(PRED, pa.int32()),
        pa.field(PRED_NAME, pa.string()),
        pa.field(PRED_VOTE, pa.int32()),
        pa.field(PRED_AVERAGE, pa.int32()),
        pa.field(VOTES, pa.list_(pa.int32())),
        pa.field(PROB, pa.list_(pa.float32())),
        pa.field(MEAN_ERROR, pa.list_(pa.float32())),
        pa.field(UNCERTAINTY, pa.float32()),
        pa.field(DECISION, pa.string()),
        pa.field(REFER_THRESHOLD, pa.float32()),
        pa.field(RISK_ALPHA, pa.float32()),
        pa.field(RISK_DELTA, pa.float32()),
        pa.field(N_DRAWS, pa.int32()),
        pa.field(NFE, pa.int32()),
        pa.field(DRAW_ERRORS, pa.list_(pa.list_(pa.float32()))),
        pa.field(DRAW_T, pa.list_(pa.float32())),
        pa.field(METHOD, pa.string()),
        pa.field(RULE, pa.string()),
        pa.field(MODEL_ID, pa.string()),
        pa.field(SEED, pa.int64()),
        pa.field(STATUS, pa.string(), nullable=False),
        pa.field(ERROR, pa.string()),
        pa.field(PREPROCESS, pa.string()),
        pa.field(CODE_VERSION, pa.string()),
    ]
)

COLUMNS = tuple(SCHEMA.names)
# Columns added after results sets were first written: a part file without them reads with them null.
ADDED_COLUMNS = (GROUP, METADATA, FOLD, DECISION, REFER_THRESHOLD, RISK_ALPHA, RISK_DELTA, PREPROCESS)


def with_added_columns(table: pa.Table) -> pa.Table:
    """``table`` with every missing column of ``ADDED_COLUMNS`` appended as nulls of its schema type."""
    for name in ADDED_COLUMNS:
        if name not in table.column_names:
            table = table.append_column(SCHEMA.field(name), pa.nulls(len(table), SCHEMA.field(name).type))
    return table


def to_table(rows: list[dict]) -> pa.Table:
    """Rows (dicts keyed by schema columns; missing keys become null) -> a table with exactly SCHEMA.

    Unknown keys are an error: a typo in a column name must not silently drop data.
    """
    return rows_to_table(rows, SCHEMA, "results")


def rows_to_table(rows: list[dict], schema: pa.Schema, what: str) -> pa.Table:
    """``rows`` -> a table with exactly ``schema``; missing keys become null, unknown keys raise KeyError."""
    unknown = {k for row in rows for k in row} - set(schema.names)
    if unknown:
        raise KeyError(f"{what} rows carry columns that are not in the schema: {sorted(unknown)}")
    return pa.Table.from_pydict({name: [row.get(name) for row in rows] for name in schema.names}, schema=schema)


def check_table(table: pa.Table, where: str = "results") -> None:
    """Raise ValueError naming the column when ``table`` does not carry SCHEMA's columns and types."""
    check_against(table, SCHEMA, where, "meddiff.results.schema")


def check_against(table: pa.Table, schema: pa.Schema, where: str, module: str) -> None:
    """Raise ValueError naming the column when ``table`` lacks a column of ``schema`` or has another type (a column
    that is all null is accepted)."""
    for fld in schema:
        if fld.name not in table.column_names:
            raise ValueError(f"{where}: column {fld.name!r} is missing (expected schema: {module})")
        got = table.schema.field(fld.name).type
        if got != fld.type and not pa.types.is_null(got):
            raise ValueError(f"{where}: column {fld.name!r} has type {got}, expected {fld.type}")
