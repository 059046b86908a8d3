"""Shards: the unit of scoring work, retry and resume, shared by in-process and Ray Data scoring.

A results folder is planned once: the rows to score (in manifest order, which is sorted by id) are cut into shards of
``shard_size`` rows, the plan is saved in ``_plan.json`` and each shard's manifest slice in ``_shards/``. Scoring a shard
writes exactly one file, ``shard-<k>.parquet``, by an atomic rename. So:
- a shard that is retried (an actor died, a node left) rewrites the same file with the same rows (noise is seeded per
  image), never a second copy: every id appears exactly once;
- a re-run scores only the shards whose file is missing;
- the results do not depend on the number of actors, their order, or which node scored what.
Re-running into a folder planned for different rows (another split, limit or shard size) is refused.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import pyarrow.parquet as pq

from meddiff.errors import ResultsError
from meddiff.results import schema as S
from meddiff.scoring.referral import apply_referral, load_referral

PLAN_FILE = "_plan.json"
SLICES_DIR = "_shards"


@dataclass(frozen=True)
class ShardPlan:
    out_dir: Path
    shard_size: int
    num_rows: int
    ids_sha256: str

    @property
    def num_shards(self) -> int:
        return (self.num_rows + self.shard_size - 1) // self.shard_size

    def result_file(self, shard: int) -> Path:
        return self.out_dir / f"shard-{shard:06d}.parquet"

    def slice_file(self, shard: int) -> Path:
        return self.out_dir / SLICES_DIR / f"shard-{shard:06d}.parquet"

    def pending(self) -> list[int]:
        return [k for k in range(self.num_shards) if not self.result_file(k).is_file()]

    def done_rows(self) -> int:
        done = [k for k in range(self.num_shards) if self.result_file(k).is_file()]
        return sum(min(self.shard_size, self.num_rows - k * self.shard_size) for k in done)


def _ids_digest(ids: Sequence[str]) -> str:
    h = hashlib.sha256()
    for i in ids:
        h.update(i.encode())
        h.update(b"\x00")
    return h.hexdigest()


def plan_shards(frame: pd.DataFrame, out_dir: str | Path, shard_size: int) -> ShardPlan:
    """Plan (or re-open the plan of) a results folder for the manifest rows in ``frame``."""
    out_dir = Path(out_dir)
    ids = frame["id"].astype(str).tolist()
    plan = ShardPlan(out_dir, shard_size, len(ids), _ids_digest(ids))
    plan_path = out_dir / PLAN_FILE
    if plan_path.is_file():
        saved = json.loads(plan_path.read_text())
        if (saved["shard_size"], saved["num_rows"], saved["ids_sha256"]) != (shard_size, len(ids), plan.ids_sha256):
            raise ResultsError(
                f"{out_dir} holds results planned for {saved['num_rows']} other rows (or another shard size); "
                f"score into a new folder, or delete it to start over"
            )
    else:
        stray = [p.name for p in out_dir.glob("*.parquet")] if out_dir.is_dir() else []
        if stray:
            raise ResultsError(f"{out_dir} already holds parquet files not written by a meddiff scoring plan: {stray[:3]}")
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / SLICES_DIR).mkdir(exist_ok=True)
        for k in range(plan.num_shards):
            rows = frame.iloc[k * shard_size : (k + 1) * shard_size]
            _atomic_write_frame(rows.reset_index(drop=True), plan.slice_file(k))
        plan_path.write_text(json.dumps({"shard_size": shard_size, "num_rows": len(ids), "ids_sha256": plan.ids_sha256,
                                         "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=2))
    return plan


def read_slice(plan: ShardPlan, shard: int) -> list[dict[str, Any]]:
    return pd.read_parquet(plan.slice_file(shard)).to_dict("records")


def _atomic_write_frame(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    frame.to_parquet(tmp, index=False)
    tmp.rename(path)


def write_shard(plan: ShardPlan, shard: int, rows: list[dict[str, Any]]) -> None:
    """Write one shard's results atomically (a retry overwrites the same file with the same rows)."""
    path = plan.result_file(shard)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    pq.write_table(S.to_table(rows), tmp)
    tmp.rename(path)


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
