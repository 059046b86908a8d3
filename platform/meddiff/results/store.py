"""Results sets on disk: a folder of parquet files under one schema (``shard-<k>.parquet``, see ``scoring.shards``)
plus meta.json (config, model, code version, the method's capabilities, the last job's throughput). Readers check the
schema; ``meddiff.results.runs`` is the read model built on these functions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from meddiff.durable import atomic_write_json
from meddiff.errors import ResultsError
from meddiff.results import schema as S

META_FILE = "meta.json"
METHOD_CAPABILITIES = "method_capabilities"  # meta.json key: {"votes": bool, "counterfactuals": bool}
THROUGHPUT = "throughput"  # meta.json key: {"images", "seconds", "images_per_s", "device", "threads", "workers"}


def write_meta(out_dir: str | Path, meta: dict[str, Any]) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / META_FILE, meta, default=str)


def update_meta(out_dir: str | Path, updates: dict[str, Any]) -> dict[str, Any]:
    """Add or replace top-level keys of a results set's meta.json (an atomic rewrite); returns the new meta.
    ResultsError when the folder has no meta.json."""
    path = Path(out_dir) / META_FILE
    if not path.is_file():
        raise ResultsError(f"{path} is missing; meta.json is written when a scoring job starts, update it after that")
    meta = {**read_meta(out_dir), **updates}
    atomic_write_json(path, meta, default=str)
    return meta


def read_meta(out_dir: str | Path) -> dict[str, Any]:
    path = Path(out_dir) / META_FILE
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: not valid JSON ({exc}); re-run `meddiff score` into this folder to rewrite it, "
                           f"or delete it") from None
    if not isinstance(meta, dict):
        raise ResultsError(f"{path}: expected a JSON object, found {type(meta).__name__}")
    return meta


def part_files(out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    return sorted(out.glob("*.parquet")) if out.is_dir() else []


def read_table(out_dir: str | Path, columns: list[str] | None = None) -> pa.Table:
    """All part files of a results set as one table (schema-checked)."""
    files = part_files(out_dir)
    if not files:
        raise FileNotFoundError(f"{out_dir}: no results parquet files (expected *.parquet written by meddiff score)")
    tables = []
    for f in files:
        table = pq.read_table(f, columns=columns)
        if columns is None:
            table = S.with_added_columns(table)
            S.check_table(table, str(f))
            table = table.select(list(S.COLUMNS))
        tables.append(table)
    return pa.concat_tables(tables)


def read_results(out_dir: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    return read_table(out_dir, columns).to_pandas()
