"""The pooled out-of-fold results set of a cross-validation: every fold's rows of one split (test: ``out/oof``, val:
``out/oof_val``) as parquet parts (``fold-<k>.parquet``) with a meta.json that ``meddiff.results.runs`` reads like any
other results set's, plus the ``cv`` block (folds, split seed, model per fold, per-fold figures)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa

from meddiff.durable import atomic_write_parquet
from meddiff.errors import ResultsError
from meddiff.provenance import code_version
from meddiff.results import schema as S
from meddiff.results.store import THROUGHPUT, read_meta, read_table, write_meta


def check_out_of_fold(frame, expected_ids: Sequence[str], where: str) -> None:
    """Every expected image id exactly once, each group in one fold only, every row's fold set. ResultsError naming the
    first offending id or group otherwise."""
    ids = frame[S.IMAGE_ID].astype(str)
    dup = ids[ids.duplicated()]
    if len(dup):
        raise ResultsError(f"{where}: image id {dup.iloc[0]!r} appears in more than one fold; each row must be "
                           f"scored out of fold exactly once")
    missing = sorted(set(map(str, expected_ids)) - set(ids))
    extra = sorted(set(ids) - set(map(str, expected_ids)))
    if missing or extra:
        raise ResultsError(f"{where}: {len(missing)} manifest rows have no out-of-fold result (first {missing[:3]}) "
                           f"and {len(extra)} results are not in the manifest (first {extra[:3]})")
    if frame[S.FOLD].isna().any():
        raise ResultsError(f"{where}: image id {ids[frame[S.FOLD].isna()].iloc[0]!r} has no fold")
    folds_per_group = frame.groupby(S.GROUP)[S.FOLD].nunique()
    crossing = folds_per_group[folds_per_group > 1]
    if len(crossing):
        raise ResultsError(f"{where}: group {crossing.index[0]!r} appears in {int(crossing.iloc[0])} folds; a patient "
                           f"or lesion must stay in one fold")


def pool_folds(fold_dirs: Sequence[Path], out_dir: str | Path, cv: dict[str, Any],
               expected_ids: Sequence[str] | None = None, data: dict[str, Any] | None = None,
               model_fold: bool = False) -> dict[str, Any]:
    """Pool the results sets ``fold_dirs`` (fold k = index k) into ``out_dir``; returns its meta.json.

    Test rows (``model_fold`` False): each fold's rows must carry ``fold == k`` (their own fold, from the manifest), and
    with ``expected_ids`` (the ids of every manifest row: the folds' test splits partition them) every id must appear
    exactly once and every group in one fold (``check_out_of_fold``). Val rows (``model_fold`` True): a row is val data
    of several folds' models, so its ``fold`` column is set to k, the fold whose model scored it and whose referral
    threshold it calibrates; an id must be unique within a fold. The parts are rewritten from scratch, so a re-run
    after a fold was re-scored pools the new rows.
    """
    out = Path(out_dir)
    tables, metas = [], []
    for k, d in enumerate(fold_dirs):
        table = read_table(d)
        if model_fold:
            ids = table.column(S.IMAGE_ID).to_pandas()
            if ids.duplicated().any():
                raise ResultsError(f"{d}: image id {ids[ids.duplicated()].iloc[0]!r} appears twice in fold {k}")
            column = pa.array([k] * table.num_rows, type=table.schema.field(S.FOLD).type)
            table = table.set_column(table.schema.get_field_index(S.FOLD), S.FOLD, column)
        folds = set(table.column(S.FOLD).to_pylist())
        if folds != {k}:
            raise ResultsError(f"{d}: expected every row's {S.FOLD!r} to be {k}, found {sorted(folds, key=str)}")
        tables.append(table)
        metas.append(read_meta(d))

    frame = pa.concat_tables(tables).select([S.IMAGE_ID, S.GROUP, S.FOLD]).to_pandas()
    if expected_ids is not None:
        check_out_of_fold(frame, expected_ids, str(out))
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for k, table in enumerate(tables):
        atomic_write_parquet(out / f"fold-{k:03d}.parquet", table)
    first = metas[0]
    images = sum((m.get(THROUGHPUT) or {}).get("images", 0) for m in metas)
    seconds = sum((m.get(THROUGHPUT) or {}).get("seconds", 0.0) for m in metas)
    meta = {
        "method": first.get("method"),
        "method_capabilities": first.get("method_capabilities"),
        "model_id": None,  # one model per fold: cv.model_ids
        "class_names": first.get("class_names"),
        "score_config": first.get("score_config"),
        "data": {**(first.get("data") or {}), **(data or {}), "rows": int(len(frame))},
        # fold 0's checkpoint stands for the architecture and diffusion settings the folds share
        "checkpoint_metadata": first.get("checkpoint_metadata"),
        "code_version": code_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cv": {**cv, "fold_column": "the fold whose model scored the row" if model_fold else "the row's own fold",
               "model_ids": [m.get("model_id") for m in metas], "fold_results": [str(d) for d in fold_dirs]},
    }
    if images and seconds:
        meta[THROUGHPUT] = {"images": int(images), "seconds": float(seconds), "images_per_s": images / seconds,
                            "device": (first.get(THROUGHPUT) or {}).get("device"),
                            "threads": (first.get(THROUGHPUT) or {}).get("threads"),
                            "workers": (first.get(THROUGHPUT) or {}).get("workers", 1)}
    write_meta(out, meta)
    return meta
