"""Durable file writes: a file is either its old whole content or its new whole content, also after a power cut.

Every write goes to a temporary file in the destination's folder, is flushed and fsynced, renamed over the destination
with ``os.replace`` (atomic on POSIX within one file system), and the folder is fsynced so the rename itself survives
a crash (rename(2) alone only orders the change in memory; see the ext4/XFS notes on ``fsync`` of directories).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable


def fsync_file(path: str | Path) -> None:
    """Flush a file's data and metadata to stable storage."""
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (created, renamed, removed names); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename is still atomic
    finally:
        os.close(fd)


def temp_path(path: str | Path) -> Path:
    """A fresh hidden temporary name next to ``path`` (same folder, so the final rename stays on one file system)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")


def commit(tmp: str | Path, final: str | Path) -> Path:
    """Make the fully written file (or folder) ``tmp`` durable and rename it to ``final``; returns ``final``."""
    tmp, final = Path(tmp), Path(final)
    if tmp.is_dir():
        for f in tmp.rglob("*"):
            if f.is_file():
                fsync_file(f)
        for d in [tmp, *(p for p in tmp.rglob("*") if p.is_dir())]:
            fsync_dir(d)
    else:
        fsync_file(tmp)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    return final


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file, then ``commit`` it to ``path``; the temporary file is removed
    when ``write`` fails, so a failed write leaves the old ``path`` untouched."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        write(tmp)
        return commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2, default: Callable | None = None) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=default))


def atomic_write_parquet(path: str | Path, table) -> Path:
    """Write a pyarrow Table or a pandas DataFrame (without its index) as parquet, atomically and durably."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp))
