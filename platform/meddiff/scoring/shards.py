"""Shards: the unit of scoring work, retry and resume, shared by in-process and Ray Data scoring.

A results folder is planned once: the rows to score (in manifest order, which is sorted by id) are cut into shards of
``shard_size`` rows, the plan is saved in ``_plan.json`` and each shard's manifest slice in ``_shards/``. Scoring a shard
writes exactly one file, ``shard-<k>.parquet``, by an atomic rename. So:
- a shard that is retried (an actor died, a node left) rewrites the same file with the same rows (noise is seeded per
  image), never a second copy: every id appears exactly once;
- a re-run verifies every written shard (readable parquet, the slice's row count and ids, the plan's fingerprint),
  removes a broken one with a log line, and scores only the shards whose file is missing;
- the results do not depend on the number of actors, their order, or which node scored what.
Re-running into a folder planned for different rows (another split, limit or shard size) is refused, and so is
re-running with another checkpoint or settings that change the numbers (``meddiff.scoring.fingerprint``).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import pyarrow.parquet as pq

from meddiff.durable import atomic_write_json, atomic_write_parquet, fsync_dir
from meddiff.errors import ResultsError, ResultsFolderInUse
from meddiff.results import schema as S
from meddiff.scoring.fingerprint import differences, digest
from meddiff.scoring.referral import apply_referral, load_referral

PLAN_FILE = "_plan.json"
SLICES_DIR = "_shards"


FINGERPRINT_KEY = b"meddiff.fingerprint"  # parquet schema metadata of every results shard: the plan's digest


@dataclass(frozen=True)
class ShardPlan:
    out_dir: Path
    shard_size: int
    num_rows: int
    ids_sha256: str
    fingerprint: str = ""  # digest of the results settings (``meddiff.scoring.fingerprint``); "" = not tracked

    @property
    def num_shards(self) -> int:
        return (self.num_rows + self.shard_size - 1) // self.shard_size

    def result_file(self, shard: int) -> Path:
        return self.out_dir / f"shard-{shard:06d}.parquet"

    def slice_file(self, shard: int) -> Path:
        return self.out_dir / SLICES_DIR / f"shard-{shard:06d}.parquet"

    def slice_rows(self, shard: int) -> int:
        return min(self.shard_size, self.num_rows - shard * self.shard_size)

    def pending(self) -> list[int]:
        return [k for k in range(self.num_shards) if not self.result_file(k).is_file()]

    def done_rows(self) -> int:
        done = [k for k in range(self.num_shards) if self.result_file(k).is_file()]
        return sum(self.slice_rows(k) for k in done)


def _ids_digest(ids: Sequence[str]) -> str:
    h = hashlib.sha256()
    for i in ids:
        h.update(i.encode())
        h.update(b"\x00")
    return h.hexdigest()


def _result_shards(out_dir: Path) -> list[Path]:
    return sorted(out_dir.glob("shard-*.parquet")) if out_dir.is_dir() else []


def _read_plan(out_dir: Path) -> dict[str, Any] | None:
    """The saved plan, or None when it is missing or unreadable and no results shard depends on it (it is then
    rebuilt); ResultsError when it is unreadable but shards were written under it."""
    path = out_dir / PLAN_FILE
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
        if not isinstance(saved, dict) or not {"shard_size", "num_rows", "ids_sha256"} <= set(saved):
            raise ValueError(f"expected an object with shard_size, num_rows and ids_sha256, found {str(saved)[:80]!r}")
        return saved
    except (ValueError, UnicodeDecodeError) as exc:
        shards = _result_shards(out_dir)
        if shards:
            raise ResultsError(
                f"{path}: unreadable plan ({exc}) while {len(shards)} results shard(s) depend on it; the rows cannot be "
                f"checked against it: score into another --out, or delete {out_dir} to start over"
            ) from None
        return None


def fresh_sibling(out_dir: str | Path, fingerprint: str) -> Path:
    """``OUT`` itself when it is new or holds results with ``fingerprint``, else the first of ``OUT-2``, ``OUT-3``, ...
    that is new or holds results with ``fingerprint`` (so re-running with --force-new resumes that folder)."""
    out_dir = Path(out_dir)
    candidates = [out_dir] + [out_dir.with_name(f"{out_dir.name}-{k}") for k in range(2, 10_000)]
    for candidate in candidates:
        if not candidate.exists():
            return candidate
        try:
            saved = _read_plan(candidate)
        except ResultsError:
            continue
        if saved is not None and saved.get("fingerprint", {}).get("digest") == fingerprint:
            return candidate
        if saved is None and not any(candidate.iterdir()):
            return candidate
    raise ResultsError(f"{out_dir}: no free sibling folder {out_dir.name}-2 ... {out_dir.name}-9999")


def plan_shards(frame: pd.DataFrame, out_dir: str | Path, shard_size: int,
                settings: dict[str, Any] | None = None, log: Callable[[str], None] | None = None,
                verify: bool = False, min_shards: int = 1) -> ShardPlan:
    """Plan (or re-open the plan of) a results folder for the manifest rows in ``frame``.

    A new plan cuts the rows into shards of at most ``shard_size`` rows and at least ``min_shards`` shards when there
    are enough rows (a pool of A actors asks for 2 A, so no actor idles and the last shards balance the load); a
    re-opened plan keeps the shard size it was made with (the shard size changes no score), so a job resumed with
    another number of actors finishes the same shards.

    ``settings`` (``meddiff.scoring.fingerprint.result_settings``) are saved with the plan; re-opening a folder whose
    results were scored with other settings raises ``ResultsFolderInUse`` naming each differing setting. With
    ``verify`` (results shards of ``meddiff.results.schema``: one row per planned row) every written shard is checked
    on re-open (``repair_shards``): a broken one is logged via ``log`` and removed, to be scored again.
    """
    out_dir = Path(out_dir)
    ids = frame["id"].astype(str).tolist()
    fp = digest(settings) if settings is not None else ""
    saved = _read_plan(out_dir)
    if saved is not None and isinstance(saved.get("shard_size"), int) and saved["shard_size"] > 0:
        shard_size = saved["shard_size"]
    else:
        shard_size = max(1, min(shard_size, -(-len(ids) // max(1, min_shards))))
    plan = ShardPlan(out_dir, shard_size, len(ids), _ids_digest(ids), fp)
    if saved is not None:
        if (saved["num_rows"], saved["ids_sha256"]) != (len(ids), plan.ids_sha256):
            raise ResultsError(
                f"{out_dir} holds results planned for {saved['num_rows']} other rows; "
                f"score into a new folder, or delete it to start over"
            )
        old = saved.get("fingerprint")
        if settings is not None and old is not None and old.get("digest") != fp:
            diffs = differences(old.get("settings", {}), settings) or ["(settings unrecorded)"]
            raise ResultsFolderInUse(
                f"{out_dir} holds results scored with other settings ({'; '.join(diffs)}); score into another --out, "
                f"or pass --force-new to write to a fresh sibling folder ({out_dir.name}-2, ...)"
            )
        if settings is not None and old is None:
            if _result_shards(out_dir):
                raise ResultsFolderInUse(
                    f"{out_dir} holds results written before meddiff recorded score settings, so they cannot be checked "
                    f"against this run; score into another --out, or pass --force-new to write to a fresh sibling folder"
                )
            _write_plan(plan)
        _repair_slices(plan, frame, log)
        if verify:
            repair_shards(plan, log)
    else:
        stray = [p.name for p in out_dir.glob("*.parquet")] if out_dir.is_dir() else []
        if stray:
            raise ResultsError(f"{out_dir} already holds parquet files not written by a meddiff scoring plan: {stray[:3]}")
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / SLICES_DIR).mkdir(exist_ok=True)
        for k in range(plan.num_shards):
            rows = frame.iloc[k * shard_size : (k + 1) * shard_size]
            atomic_write_parquet(plan.slice_file(k), rows.reset_index(drop=True))
        fsync_dir(out_dir / SLICES_DIR)
        _write_plan(plan, settings)
    return plan


def _repair_slices(plan: ShardPlan, frame: pd.DataFrame, log: Callable[[str], None] | None) -> None:
    """Rewrite each missing or unreadable manifest slice from ``frame`` (its ids match the plan's, so the slice is
    exactly what was planned)."""
    write = log or (lambda line: print(line, file=sys.stderr))
    for k in range(plan.num_shards):
        path = plan.slice_file(k)
        try:
            ok = pq.read_metadata(path).num_rows == plan.slice_rows(k)
        except Exception:  # missing, empty or cut short
            ok = False
        if not ok:
            write(f"[score] shard {k}: its planned slice {path.name} is missing or unreadable; rewriting it from the data")
            path.parent.mkdir(exist_ok=True)
            rows = frame.iloc[k * plan.shard_size : (k + 1) * plan.shard_size]
            atomic_write_parquet(path, rows.reset_index(drop=True))


def _write_plan(plan: ShardPlan, settings: dict[str, Any] | None = None) -> None:
    record: dict[str, Any] = {"shard_size": plan.shard_size, "num_rows": plan.num_rows, "ids_sha256": plan.ids_sha256,
                              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if settings is not None:
        record["fingerprint"] = {"digest": plan.fingerprint, "settings": settings}
    atomic_write_json(plan.out_dir / PLAN_FILE, record)


def shard_problem(plan: ShardPlan, shard: int) -> str | None:
    """Why the written results file of ``shard`` cannot be counted as done (None when it is whole): unreadable or
    truncated parquet, another row count than the plan's slice, other ids, or another fingerprint."""
    path = plan.result_file(shard)
    if path.stat().st_size == 0:
        return "empty file"
    try:
        meta = pq.read_metadata(path)
        ids = pq.read_table(path, columns=[S.IMAGE_ID]).column(S.IMAGE_ID).to_pylist()
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError or others on a cut file
        return f"truncated or unreadable parquet ({type(exc).__name__}: {str(exc)[:120]})"
    expected = plan.slice_rows(shard)
    if meta.num_rows != expected:
        return f"{meta.num_rows} rows where the plan has {expected}"
    want = pd.read_parquet(plan.slice_file(shard), columns=["id"])["id"].astype(str).tolist()
    if [str(i) for i in ids] != want:
        first = next(k for k, (a, b) in enumerate(zip(ids, want)) if str(a) != b)
        return f"other ids than the plan's slice (row {first}: {ids[first]!r}, expected {want[first]!r})"
    if plan.fingerprint:
        found = (meta.metadata or {}).get(FINGERPRINT_KEY, b"").decode()
        if found != plan.fingerprint:
            return f"scored with other settings (fingerprint {found[:12] or 'none'} != {plan.fingerprint[:12]})"
    return None


def repair_shards(plan: ShardPlan, log: Callable[[str], None] | None = None) -> list[int]:
    """Verify every written shard; remove each broken one (so it is scored again) and log why. Returns their ids."""
    write = log or (lambda line: print(line, file=sys.stderr))
    broken = []
    for k in range(plan.num_shards):
        if not plan.result_file(k).is_file():
            continue
        problem = shard_problem(plan, k)
        if problem is not None:
            write(f"[score] shard {k}: {problem}; re-scoring its {plan.slice_rows(k)} rows")
            plan.result_file(k).unlink()
            broken.append(k)
    if broken:
        fsync_dir(plan.out_dir)
    return broken


def read_slice(plan: ShardPlan, shard: int) -> list[dict[str, Any]]:
    return pd.read_parquet(plan.slice_file(shard)).to_dict("records")


def write_shard(plan: ShardPlan, shard: int, rows: list[dict[str, Any]]) -> None:
    """Write one shard's results atomically and durably, tagged with the plan's fingerprint (a retry overwrites the
    same file with the same rows)."""
    table = S.to_table(rows)
    if plan.fingerprint:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), FINGERPRINT_KEY: plan.fingerprint})
    atomic_write_parquet(plan.result_file(shard), table)


def score_shard(predictor, plan: ShardPlan, shard: int, on_batch=None) -> dict[str, Any]:
    """Score one shard with ``predictor`` and write its results file.

    ``on_batch(n)`` is called when the shard is done (progress). Returns {"shard", "rows", "errors", "seconds"}.
    """
    t0 = time.monotonic()
    rows = read_slice(plan, shard)
    # the whole shard at once: the engine keeps ``batch_size`` images in flight and refills slots as images stop
    out = predictor.predict_rows(rows)
    apply_referral(out, load_referral(predictor.cfg.referral, predictor.model_id))
    if on_batch is not None:
        on_batch(len(out))
    write_shard(plan, shard, out)
    errors = sum(r[S.STATUS] != S.STATUS_OK for r in out)
    return {"shard": shard, "rows": len(out), "errors": errors, "seconds": time.monotonic() - t0}
