"""An explanation folder under a results root as the gallery shows it: what was explained (``ExplanationInfo``) and one
item per explained image, every PNG path checked to be under the root (``ResultsRoot.resolve``), with the votes of the
results set the images were selected from when it is under the root."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from meddiff.results import explain_schema as X
from meddiff.results import schema as S
from meddiff.results.explanations import read_explain_meta
from meddiff.results.root import OutsideRootError, ResultsRoot, is_results_set

@dataclass(frozen=True)
class ExplanationInfo:
    name: str
    path: Path
    model_id: str
    results: Path | None  # the results set the images were selected from, when it is under the root
    results_note: str  # why ``results`` is None
    settings: dict[str, Any]
    class_names: tuple[str, ...]


def explanation_info(root: ResultsRoot, path: Path) -> ExplanationInfo:
    path = root.resolve(path)
    root.check_files(path)  # explain.json, index/ parts and PNGs: no symlink out of the root is read
    meta = read_explain_meta(path)
    results, note = None, ""
    if meta.get("results"):
        try:
            candidate = root.resolve(meta["results"])
            if is_results_set(candidate):
                results = candidate
            else:
                note = f"the results set it was made from ({meta['results']}) is gone"
        except OutsideRootError:
            note = f"the results set it was made from ({meta['results']}) is outside the results root, so votes are not shown"
    cfg = meta.get("explain_config") or {}
    return ExplanationInfo(name=root.name(path), path=path, model_id=meta.get("model_id") or "?", results=results,
                           results_note=note, settings={k: cfg.get(k) for k in ("t_start", "steps", "guidance", "seed",
                                                                                 "select")},
                           class_names=tuple(meta.get("class_names") or ()))


def gallery_items(root: ResultsRoot, info: ExplanationInfo, index: pd.DataFrame,
                  results: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """One item per explained image, in index order: its input PNG, per class the reconstruction and difference PNGs
    (absolute paths, each checked to be under the root) with the reconstruction error, and the scoring beside it
    (label, prediction, uncertainty from the index; votes from the results set when available)."""
    by_id = results.set_index(S.IMAGE_ID) if results is not None and not results.empty else None
    items = []
    for image_id, rows in index.groupby(X.IMAGE_ID, sort=False):
        first = rows.iloc[0]
        item = {"image_id": image_id, "label": _str(first[X.LABEL_NAME]), "reason": first[X.REASON],
                "pred": _int(first[X.PRED]), "uncertainty": _float(first[X.UNCERTAINTY]), "votes": None,
                "error": None, "input": None, "classes": []}
        if by_id is not None and image_id in by_id.index and by_id.loc[image_id, S.VOTES] is not None:
            names = info.class_names or tuple(str(i) for i in range(len(by_id.loc[image_id, S.VOTES])))
            item["votes"] = dict(zip(names, (int(v) for v in by_id.loc[image_id, S.VOTES])))
        ok = rows[rows[X.STATUS] == X.STATUS_OK]
        if ok.empty:
            item["error"] = "; ".join(str(e) for e in rows[X.ERROR].dropna().unique()) or "explanation failed"
            items.append(item)
            continue
        try:  # an index row pointing outside the root (``..``, an absolute path) is refused, not followed
            item["input"] = root.resolve(info.path / ok.iloc[0][X.INPUT_PNG])
            for _, r in ok.sort_values(X.CLASS).iterrows():
                item["classes"].append({
                    "class": int(r[X.CLASS]), "class_name": r[X.CLASS_NAME], "factual": bool(r[X.FACTUAL]),
                    "reconstruction": root.resolve(info.path / r[X.RECON_PNG]),
                    "difference": root.resolve(info.path / r[X.DIFF_PNG]),
                    "error": _float(r[X.RECON_ERROR]), "mode": r[X.DIFF_MODE],
                })
            missing = [p for p in [item["input"], *(c[k] for c in item["classes"] for k in ("reconstruction",
                                                                                          "difference"))]
                       if not p.is_file()]
            if missing:
                item.update(input=None, classes=[], error=f"{len(missing)} PNG file(s) are missing, e.g. {missing[0]}")
        except OutsideRootError as exc:
            item.update(input=None, classes=[], error=str(exc))
        items.append(item)
    return items


def _str(v) -> str | None:
    return None if v is None or v != v else str(v)


def _int(v) -> int | None:
    return None if v is None or v != v else int(v)


def _float(v) -> float | None:
    return None if v is None or v != v else float(v)
