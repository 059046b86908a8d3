"""Results sets: a folder of parquet part files under one schema, plus meta.json (config, model, code version).

Writers append part files (``part-<writer>-<n>.parquet``); nothing is held for the whole set in memory. Readers check
the schema and can list which ids are already done, so an interrupted job can finish the rest without re-scoring.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from meddiff.scoring import schema as S

META_FILE = "meta.json"


class ResultsWriter:
    """Buffers rows and writes a part file every ``rows_per_file`` rows (and on ``close``)."""

    def __init__(self, out_dir: str | Path, rows_per_file: int = 1000, prefix: str | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.rows_per_file = rows_per_file
        self.prefix = prefix or f"part-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self._rows: list[dict[str, Any]] = []
        self._n = 0
        self.written = 0

    def add(self, rows: Iterable[dict[str, Any]]) -> None:
        self._rows.extend(rows)
        if len(self._rows) >= self.rows_per_file:
            self.flush()

    def flush(self) -> None:
        if not self._rows:
            return
        table = S.to_table(self._rows)
        final = self.out_dir / f"{self.prefix}-{self._n:05d}.parquet"
        tmp = final.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp)
        tmp.rename(final)  # readers never see a half-written part
        self._n += 1
        self.written += len(self._rows)
        self._rows = []

    def close(self) -> None:
        self.flush()


def write_meta(out_dir: str | Path, meta: dict[str, Any]) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / META_FILE).write_text(json.dumps(meta, indent=2, default=str))


def read_meta(out_dir: str | Path) -> dict[str, Any]:
    path = Path(out_dir) / META_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


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
            S.check_table(table, str(f))
        tables.append(table)
    return pa.concat_tables(tables)


def read_results(out_dir: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    return read_table(out_dir, columns).to_pandas()


def scored_ids(out_dir: str | Path) -> set[str]:
    """Ids that already have a row (ok or error) in a results folder: a resumed job skips them, so every id is written
    exactly once. An error row is final for that run (a corrupt file stays corrupt); score into a new folder to retry."""
    if not part_files(out_dir):
        return set()
    return set(read_table(out_dir, columns=[S.IMAGE_ID]).column(S.IMAGE_ID).to_pylist())
