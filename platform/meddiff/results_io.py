"""Read-side of results for browsing (the dashboard): a results root that nothing outside of can be read from,
discovery of the results sets and explanation folders under it, and the frames the pages show.

Everything is read through the schema modules (``meddiff.results.store`` / ``schema`` for results sets,
``meddiff.explain.job.read_index`` / ``results.explain_schema`` for explanations) and every path, including the PNG paths an
explanation index holds, goes through ``ResultsRoot.resolve``, which refuses anything outside the root (``..``,
absolute paths elsewhere, symlinks out).

    root = ResultsRoot("runs")                 # or ResultsRoot.from_env() (MEDDIFF_RESULTS_ROOT, set by meddiff dashboard)
    runs = [run_info(root, p) for p in root.find_runs()]
    table = overview_table([(info, load_run(info.path)) for info in runs])
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from meddiff import metrics as M
from meddiff.errors import ResultsError
from meddiff.method_registry import discover
from meddiff.results import schema as S
from meddiff.results.store import META_FILE, part_files, read_meta, read_results

ROOT_ENV = "MEDDIFF_RESULTS_ROOT"
EXPLAIN_META = "explain.json"  # meddiff.explain.job.META_FILE
EXPLAIN_INDEX = "index"  # meddiff.explain.job.INDEX_DIR
_SKIP_DIRS = {"_shards", "checkpoints", "train_state", "png", "__pycache__", ".git", ".venv"}


class OutsideRootError(ResultsError):
    """A path that is not under the results root the dashboard was started on."""


class ResultsRoot:
    """The one folder the dashboard may read; ``resolve`` refuses every path outside it."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path).expanduser()
        if not path.is_dir():
            raise ResultsError(f"results root {path} is not a folder; pass the folder that holds your results sets "
                               f"(e.g. meddiff dashboard --results runs)")
        self.path = path.resolve()

    @classmethod
    def from_env(cls) -> "ResultsRoot":
        value = os.environ.get(ROOT_ENV)
        if not value:
            raise ResultsError(f"no results root configured: start the dashboard with `meddiff dashboard --results DIR` "
                               f"(or set {ROOT_ENV}=DIR)")
        return cls(value)

    def resolve(self, path: str | Path) -> Path:
        """``path`` (relative to the root, or absolute) as an absolute path under the root; OutsideRootError if not."""
        text = str(path).strip()
        if not text:
            return self.path
        candidate = Path(text).expanduser()
        full = (candidate if candidate.is_absolute() else self.path / candidate).resolve()
        if full != self.path and self.path not in full.parents:
            raise OutsideRootError(f"{text} is outside the results root {self.path}; the dashboard only reads results "
                                   f"under that folder (start it with meddiff dashboard --results <folder> to browse "
                                   f"another one)")
        return full

    def name(self, path: str | Path) -> str:
        """The path relative to the root (posix), ``.`` for the root itself."""
        rel = Path(path).resolve().relative_to(self.path).as_posix()
        return rel or "."

    def find_runs(self, under: str | Path = "") -> list[Path]:
        """Results sets (meta.json + parquet part files written by meddiff score) under ``under``, sorted by name."""
        return [p for p in self._walk(self.resolve(under)) if is_results_set(p)]

    def find_explanations(self, under: str | Path = "") -> list[Path]:
        """Explanation folders (explain.json + index/shard-*.parquet written by meddiff explain), sorted by name."""
        return [p for p in self._walk(self.resolve(under)) if is_explanation(p)]

    def _walk(self, start: Path) -> list[Path]:
        found = []
        for folder, dirs, _ in os.walk(start, followlinks=False):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
            found.append(Path(folder))
        return sorted(found)


def is_results_set(path: Path) -> bool:
    return (path / META_FILE).is_file() and bool(part_files(path))


def is_explanation(path: Path) -> bool:
    return (path / EXPLAIN_META).is_file() and any((path / EXPLAIN_INDEX).glob("shard-*.parquet"))


def signature(path: Path) -> tuple:
    """Names, sizes and mtimes of a folder's parquet and JSON files: a cache key that changes when results change."""
    files = sorted([*path.glob("*.parquet"), *path.glob("*.json"), *(path / EXPLAIN_INDEX).glob("*.parquet")])
    return tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)


# --- results sets -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunInfo:
    """What a results set is, from its meta.json (written by ``scoring.local.results_meta``)."""

    name: str
    path: Path
    dataset: str
    method: str
    backbone: str
    model_id: str
    n_draws: int | None
    seed: int | None
    rule: str | None
    split: str
    class_names: tuple[str, ...]
    created: str


def run_info(root: ResultsRoot, path: Path) -> RunInfo:
    meta = read_meta(path)
    ckpt = meta.get("checkpoint_metadata") or {}
    score = meta.get("score_config") or {}
    method = meta.get("method") or ckpt.get("kind") or "?"
    methods = discover()
    votes = methods[method].votes if method in methods else False
    return RunInfo(
        name=root.name(path),
        path=path,
        dataset=(meta.get("data") or {}).get("name") or "?",
        method=method,
        backbone=(ckpt.get("model") or {}).get("name") or "?",
        model_id=meta.get("model_id") or "?",
        n_draws=score.get("n_draws") if votes else None,
        seed=score.get("seed"),
        rule=score.get("rule") if votes else None,
        split=score.get("split") or "?",
        class_names=tuple(meta.get("class_names") or ckpt.get("class_names") or ()),
        created=meta.get("created") or "",
    )


def load_run(path: Path) -> pd.DataFrame:
    """All rows of a results set (schema-checked by ``results.store.read_results``)."""
    return read_results(path)


def scored(df: pd.DataFrame) -> pd.DataFrame:
    """Rows that were scored and have a known label (what every metric is computed on)."""
    return df[(df[S.STATUS] == S.STATUS_OK) & (df[S.LABEL] >= 0)]


OVERVIEW_COLUMNS = ["run", "dataset", "method", "backbone", "N", "images", "failed", "accuracy", "F1", "ROC AUC",
                    "acc. average rule", "F1 average rule", "acc. @50% coverage", "NFE / image", "model_id"]


def overview_row(info: RunInfo, df: pd.DataFrame) -> dict[str, Any]:
    """One line of the Table 1 comparison: the diffusion rows report the majority vote (the paper's rule) in the main
    columns and the average-error rule beside it; baselines their single prediction."""
    s = M.summarize_results(df, len(info.class_names) or None)
    vote = "accuracy_vote" in s
    get = lambda key: s.get(key, float("nan"))
    return {
        "run": info.name, "dataset": info.dataset, "method": info.method, "backbone": info.backbone,
        "N": info.n_draws, "images": s["labelled"], "failed": s["errors"],
        "accuracy": get("accuracy_vote" if vote else "accuracy"), "F1": get("f1_vote" if vote else "f1"),
        "ROC AUC": get("auc_vote" if vote else "auc"),
        "acc. average rule": get("accuracy_average"), "F1 average rule": get("f1_average"),
        "acc. @50% coverage": get("accuracy_vote_at_50pct" if vote else "accuracy_at_50pct"),
        "NFE / image": s.get("nfe_per_image", float("nan")), "model_id": info.model_id,
    }


def overview_table(runs: Iterable[tuple[RunInfo, pd.DataFrame]]) -> pd.DataFrame:
    return pd.DataFrame([overview_row(info, df) for info, df in runs], columns=OVERVIEW_COLUMNS)


def correctness(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(correct, uncertainty, tiebreak) of the scored rows: the same ordering ``metrics.summarize_results`` uses
    (diffusion: ties broken by the error margin; baselines: by the top softmax probability)."""
    ok = scored(df)
    correct = (ok[S.PRED].to_numpy() == ok[S.LABEL].to_numpy())
    unc = ok[S.UNCERTAINTY].to_numpy(dtype=np.float64)
    if len(ok) and ok[S.MEAN_ERROR].notna().all():
        tiebreak = M.error_margin(np.stack(ok[S.MEAN_ERROR].to_numpy()))
    elif len(ok):
        tiebreak = np.stack(ok[S.PROB].to_numpy()).max(axis=1)
    else:
        tiebreak = np.zeros(0)
    return correct, unc, tiebreak


def coverage_curve(df: pd.DataFrame) -> pd.DataFrame:
    """Accuracy of the k most certain images, k = 1..N (``metrics.coverage_curve``)."""
    correct, unc, tiebreak = correctness(df)
    return M.coverage_curve(correct, unc, tiebreak)


def threshold_curve(df: pd.DataFrame) -> pd.DataFrame:
    """Keep the images whose uncertainty is <= a threshold: one row per distinct threshold with the coverage and the
    accuracy of what is kept (columns threshold, kept, coverage, accuracy)."""
    correct, unc, _ = correctness(df)
    if len(unc) == 0:
        return pd.DataFrame(columns=["threshold", "kept", "coverage", "accuracy"])
    order = np.argsort(unc, kind="stable")
    u, c = unc[order], correct[order].astype(np.float64)
    last = np.r_[np.nonzero(np.diff(u))[0], len(u) - 1]  # last index of every distinct uncertainty value
    kept = last + 1
    return pd.DataFrame({"threshold": u[last], "kept": kept, "coverage": kept / len(u),
                         "accuracy": np.cumsum(c)[last] / kept})


def at_threshold(df: pd.DataFrame, threshold: float) -> dict[str, float]:
    """What the threshold slider shows: images kept (uncertainty <= threshold), coverage, accuracy on them, and the
    accuracy of all images for comparison."""
    correct, unc, _ = correctness(df)
    keep = unc <= threshold + 1e-9
    n = len(unc)
    return {"threshold": float(threshold), "kept": int(keep.sum()), "images": n,
            "coverage": float(keep.mean()) if n else float("nan"),
            "accuracy": float(correct[keep].mean()) if keep.any() else float("nan"),
            "accuracy (all)": float(correct.mean()) if n else float("nan")}


def thin(curve: pd.DataFrame, max_points: int = 400) -> pd.DataFrame:
    """At most ``max_points`` evenly spaced rows (always the first and last) so long curves plot quickly."""
    if len(curve) <= max_points:
        return curve
    idx = np.unique(np.linspace(0, len(curve) - 1, max_points).round().astype(int))
    return curve.iloc[idx]


# --- one image ----------------------------------------------------------------------------------------------------


def image_row(df: pd.DataFrame, image_id: str) -> pd.Series:
    rows = df[df[S.IMAGE_ID] == image_id]
    if rows.empty:
        raise ResultsError(f"image {image_id!r} is not in this results set")
    return rows.iloc[0]


def votes_frame(row: pd.Series, class_names: Sequence[str]) -> pd.DataFrame:
    """Per class: votes, vote share (or softmax for a baseline) and mean error over draws."""
    names = _names(row, class_names)
    out = pd.DataFrame({"class": names})
    if row[S.VOTES] is not None:
        out["votes"] = [int(v) for v in row[S.VOTES]]
    if row[S.PROB] is not None:
        out["share" if row[S.VOTES] is not None else "softmax"] = list(row[S.PROB])
    if row[S.MEAN_ERROR] is not None:
        out["mean error"] = list(row[S.MEAN_ERROR])
    return out


def draws_frame(row: pd.Series, class_names: Sequence[str]) -> pd.DataFrame | None:
    """Per draw k and class: t, the error, whether that class won draw k (its vote). None when the run did not store
    per-draw errors (``score.store_draws: false``) or is a baseline."""
    errors, t = row[S.DRAW_ERRORS], row[S.DRAW_T]
    if errors is None or t is None:
        return None
    e = np.stack([np.asarray(x, dtype=np.float64) for x in errors])  # [C, N]
    names = _names(row, class_names)
    winner = e.argmin(axis=0)
    n = e.shape[1]
    return pd.DataFrame({
        "draw": np.tile(np.arange(1, n + 1), len(names)),
        "class": np.repeat(names, n),
        "t": np.tile(np.asarray(t, dtype=np.float64), len(names)),
        "error": e.reshape(-1),
        "vote": np.concatenate([winner == c for c in range(len(names))]),
    })


def vote_share_over_draws(draws: pd.DataFrame) -> pd.DataFrame:
    """Running vote share of every class after the first k draws (k = 1..N): how the vote settles as N grows."""
    wide = draws.pivot(index="draw", columns="class", values="vote").astype(float)
    share = wide.cumsum().div(np.arange(1, len(wide) + 1), axis=0)
    return share.reset_index().melt(id_vars="draw", var_name="class", value_name="share")


def _names(row: pd.Series, class_names: Sequence[str]) -> list[str]:
    width = len(row[S.PROB]) if row[S.PROB] is not None else len(class_names)
    names = list(class_names)[:width]
    return names + [f"class {i}" for i in range(len(names), width)]


# --- explanations -------------------------------------------------------------------------------------------------


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
    meta = json.loads((path / EXPLAIN_META).read_text())
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


def load_explanations(path: Path) -> pd.DataFrame:
    """The explanation index (``meddiff.results.explain_schema``, schema-checked by ``explain.job.read_index``)."""
    from meddiff.explain.job import read_index

    return read_index(path)


def gallery_items(root: ResultsRoot, info: ExplanationInfo, index: pd.DataFrame,
                  results: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """One item per explained image, in index order: its input PNG, per class the reconstruction and difference PNGs
    (absolute paths, each checked to be under the root) with the reconstruction error, and the scoring beside it
    (label, prediction, uncertainty from the index; votes from the results set when available)."""
    from meddiff.results import explain_schema as X

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
