"""An explanation folder as written by ``meddiff explain`` (``meddiff.explain.job``): explain.json and the index.

    <out>/explain.json             what was explained: checkpoint, results set, sampler settings, selection
    <out>/index/shard-<k>.parquet  one index file per shard (``meddiff.results.explain_schema``)

Readers (the dashboard, the explain job's gallery) read an index only through ``read_index``, which checks the schema.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from meddiff.errors import ResultsError
from meddiff.results import explain_schema as X

META_FILE = "explain.json"
INDEX_DIR = "index"
INDEX_GLOB = "shard-*.parquet"


def index_files(out_dir: str | Path) -> list[Path]:
    """The index shard files of an explanation folder, sorted by name."""
    return sorted((Path(out_dir) / INDEX_DIR).glob(INDEX_GLOB))


def is_explanation(path: str | Path) -> bool:
    """Whether ``path`` holds explain.json and at least one index shard."""
    return (Path(path) / META_FILE).is_file() and bool(index_files(path))


def read_explain_meta(out_dir: str | Path) -> dict[str, Any]:
    """explain.json of an explanation folder; ResultsError when it is missing or not a JSON object."""
    path = Path(out_dir) / META_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ResultsError(f"{path} is missing; an explanation folder is written by meddiff explain") from exc
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path} is not valid JSON ({exc}); expected the explain.json meddiff explain writes") from exc
    if not isinstance(meta, dict):
        raise ResultsError(f"{path} holds a {type(meta).__name__}, expected a JSON object")
    return meta


def read_index(out_dir: str | Path) -> pd.DataFrame:
    """All index shards of an explanation folder as one frame (schema-checked), in image-then-class order."""
    files = index_files(out_dir)
    if not files:
        raise FileNotFoundError(f"{out_dir}: no explanation index (expected {INDEX_DIR}/{INDEX_GLOB} written by "
                                f"meddiff explain)")
    tables = []
    for f in files:
        t = pq.read_table(f)
        X.check_table(t, str(f))
        tables.append(t)
    return pa.concat_tables(tables).to_pandas()
