"""The read model of a results set (a folder written by ``meddiff score``): what produced it, what its method can do,
its scored rows, its stored per-draw errors and its throughput. The report, the dashboard and the benchmark read
results sets only through ``ResultsSet``.

What a method can do is read from meta.json's ``method_capabilities`` ({"votes": bool, "counterfactuals": bool},
written by the scorer from the method registry); a folder written before that key existed falls back to the registry
entry of its ``method``, and an unknown method has neither. Columns are never inspected to guess it.

Throughput is meta.json's ``throughput`` record (images and seconds of the last scoring job that scored images, its
device and threads); a folder without one gets an estimate from file times, labelled as such (wrong for a resumed job).

    run = load("runs/a/results")            # or load("NAME=DIR"); open_results(path) reads meta.json only
    run.votes, run.frame, run.throughput()
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from meddiff.errors import ResultsError
from meddiff.method_registry import discover
from meddiff.results import schema as S
from meddiff.results.store import META_FILE, METHOD_CAPABILITIES, THROUGHPUT, part_files, read_meta, read_results

RECORDED = "recorded"
ESTIMATED = "estimated from file times"


def ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows that were scored (status ok), labelled or not."""
    return df[df[S.STATUS] == S.STATUS_OK]


def scored(df: pd.DataFrame) -> pd.DataFrame:
    """Rows that were scored (status ok) and have a known label (label >= 0): what every metric is computed on."""
    return df[(df[S.STATUS] == S.STATUS_OK) & (df[S.LABEL] >= 0)]


@dataclass(frozen=True)
class Capabilities:
    """What a results set's method can do. votes: its rows carry majority votes over noise draws (pred_vote,
    pred_average, votes), which the vote-vs-average and N ablations need; counterfactuals: ``meddiff explain`` can
    re-generate its images under another class. source: where this was read ("meta.json", "method registry", or
    "unknown method")."""

    votes: bool
    counterfactuals: bool
    source: str

    def as_meta(self) -> dict[str, bool]:
        """The meta.json record (``method_capabilities``)."""
        return {"votes": self.votes, "counterfactuals": self.counterfactuals}


def registry_capabilities(method: str | None) -> Capabilities:
    """The registry entry's capabilities of ``method`` (what the scorer records); an unknown method has none."""
    methods = discover()
    if method not in methods:
        return Capabilities(votes=False, counterfactuals=False, source="unknown method")
    entry = methods[method]
    return Capabilities(votes=bool(entry.votes), counterfactuals=entry.counterfactual is not None,
                        source="method registry")


def capabilities_of(meta: dict[str, Any], where: str | Path = META_FILE) -> Capabilities:
    """meta.json's ``method_capabilities``; without it (a folder written before the key), the registry entry of its
    method. ResultsError when the key is there but is not {"votes": bool, "counterfactuals": bool}."""
    record = meta.get(METHOD_CAPABILITIES)
    if record is None:
        return registry_capabilities(method_of(meta))
    if not (isinstance(record, dict) and isinstance(record.get("votes"), bool)
            and isinstance(record.get("counterfactuals"), bool)):
        raise ResultsError(f"{where}: {METHOD_CAPABILITIES} is {record!r}; expected {{\"votes\": true|false, "
                           f"\"counterfactuals\": true|false}} as meddiff score writes it")
    return Capabilities(votes=record["votes"], counterfactuals=record["counterfactuals"], source="meta.json")


def method_of(meta: dict[str, Any]) -> str:
    """The method that produced a results set: meta.json's ``method``, else its checkpoint's ``kind``, else "?"."""
    return str(meta.get("method") or (meta.get("checkpoint_metadata") or {}).get("kind") or "?")


@dataclass(frozen=True)
class Throughput:
    """Images per second of a results set. source: ``RECORDED`` (the scorer's record of its last job), ``ESTIMATED``
    (meta.json's creation to the last part file; wrong for a resumed job) or None (unknown)."""

    images_per_s: float | None
    source: str | None
    device: str | None = None
    threads: int | None = None
    images: int | None = None
    seconds: float | None = None


@dataclass(frozen=True, eq=False)
class ResultsSet:
    """One results set. name: what readers call it (``NAME=DIR`` on the report's command line, the path under the
    dashboard's root, else the folder's name). meta: its meta.json. The rows are read on first use."""

    path: Path
    name: str
    meta: dict[str, Any]

    # --- the rows ---------------------------------------------------------------------------------------------------

    @cached_property
    def rows(self) -> pd.DataFrame:
        """Every row, failed ones included (schema-checked by ``results.store.read_results``)."""
        return read_results(self.path)

    @cached_property
    def frame(self) -> pd.DataFrame:
        """The scored rows (``scored``), indexed 0..M-1: the rows every metric uses."""
        return scored(self.rows).reset_index(drop=True)

    @property
    def total_rows(self) -> int:
        return len(self.rows)

    @property
    def y(self) -> np.ndarray:
        return self.frame[S.LABEL].to_numpy().astype(int)

    # --- what produced it -------------------------------------------------------------------------------------------

    @property
    def method(self) -> str:
        return method_of(self.meta)

    @cached_property
    def capabilities(self) -> Capabilities:
        return capabilities_of(self.meta, self.path / META_FILE)

    @property
    def votes(self) -> bool:
        """Whether its rows carry majority votes over noise draws (``Capabilities.votes``)."""
        return self.capabilities.votes

    @property
    def checkpoint(self) -> dict[str, Any]:
        """The checkpoint's metadata as meta.json recorded it (model, diffusion settings, classes, training step)."""
        return self.meta.get("checkpoint_metadata") or {}

    @property
    def score_config(self) -> dict[str, Any]:
        return self.meta.get("score_config") or {}

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.meta.get("class_names") or self.checkpoint.get("class_names") or ())

    @property
    def num_classes(self) -> int:
        return len(self.class_names) or int(np.stack(self.frame[S.PROB].to_numpy()).shape[1])

    @property
    def dataset(self) -> str:
        return (self.meta.get("data") or {}).get("name") or "?"

    @property
    def backbone(self) -> str:
        """The architecture's name (``model.name`` of the checkpoint)."""
        return (self.checkpoint.get("model") or {}).get("name") or "?"

    @property
    def model_id(self) -> str | None:
        return self.meta.get("model_id")

    @property
    def n_draws(self) -> int | None:
        """Configured noise draws per image (methods that vote), else None."""
        return self.score_config.get("n_draws") if self.votes else None

    @property
    def rule(self) -> str | None:
        """The configured decision rule (methods that vote), else None."""
        return self.score_config.get("rule") if self.votes else None

    @property
    def seed(self) -> int | None:
        return self.score_config.get("seed")

    @property
    def split(self) -> str:
        return self.score_config.get("split") or "?"

    @property
    def created(self) -> str:
        return self.meta.get("created") or ""

    # --- stored draws -----------------------------------------------------------------------------------------------

    @property
    def has_draws(self) -> bool:
        """Stored per-draw errors and t of a method that votes, with the shifted-cosine schedule they were drawn
        under in the checkpoint metadata (the ablations replay them in log-SNR); a method with another noise schedule
        (e.g. Stable Diffusion's DDPM table) is left out."""
        return (self.votes and bool(len(self.frame)) and "diffusion" in self.checkpoint
                and bool(self.frame[S.DRAW_ERRORS].notna().all()) and bool(self.frame[S.DRAW_T].notna().all()))

    def draw_errors(self) -> np.ndarray:
        """[M, C, N] stored per-draw errors (target: ``score_config.error_target``)."""
        arrays = [np.stack(list(e)).astype(np.float64) for e in self.frame[S.DRAW_ERRORS]]
        sizes = {a.shape for a in arrays}
        if len(sizes) != 1:
            raise ResultsError(f"{self.path}: images carry different numbers of draws {sorted(sizes)}; the ablations "
                               f"need one N per results set")
        return np.stack(arrays)

    def draw_t(self) -> np.ndarray:
        """[M, N] the draws' t."""
        return np.stack([np.asarray(t, dtype=np.float64) for t in self.frame[S.DRAW_T]])

    # --- throughput -------------------------------------------------------------------------------------------------

    def throughput(self) -> Throughput:
        """The scorer's record in meta.json when there is one; else an estimate from the times of meta.json's creation
        and of the last part file (``Throughput.source`` says which)."""
        rec = self.meta.get(THROUGHPUT) or {}
        if rec.get("images_per_s"):
            return Throughput(images_per_s=float(rec["images_per_s"]), source=RECORDED, device=rec.get("device"),
                              threads=rec.get("threads"), images=rec.get("images"), seconds=rec.get("seconds"))
        created, files = self.meta.get("created"), part_files(self.path)
        if created and files:
            try:
                seconds = max(f.stat().st_mtime for f in files) - _epoch(created)
            except (ValueError, OSError):
                seconds = 0.0
            if seconds > 0:
                return Throughput(images_per_s=self.total_rows / seconds, source=ESTIMATED, images=self.total_rows,
                                  seconds=seconds)
        return Throughput(images_per_s=None, source=None)


def _epoch(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z").timestamp()


def default_name(path: Path) -> str:
    """The folder's name, with its parent's when it is a generic ``results``/``res`` folder."""
    return path.name if path.name not in ("results", "res") else f"{path.parent.name}/{path.name}"


def open_results(path: str | Path, name: str | None = None) -> ResultsSet:
    """The results set at ``path`` with its meta.json read (rows on first use). ResultsError when ``path`` holds no
    part files or its meta.json is not a JSON object."""
    path = Path(path).expanduser()
    if not part_files(path):
        raise ResultsError(f"{path}: not a results folder (no *.parquet); pass folders written by `meddiff score`")
    try:
        meta = read_meta(path)
    except ValueError as exc:
        raise ResultsError(f"{path / META_FILE}: not valid JSON ({exc}); expected the meta.json meddiff score "
                           f"writes") from exc
    if not isinstance(meta, dict):
        raise ResultsError(f"{path / META_FILE} holds a {type(meta).__name__}, expected a JSON object")
    return ResultsSet(path=path, name=name or default_name(path), meta=meta)


def load(spec: str | Path) -> ResultsSet:
    """A results folder with labelled scored rows, optionally named: ``DIR`` or ``NAME=DIR`` (rows read now).
    ResultsError when it is not a results folder or has no scored row with a known label."""
    text = str(spec)
    name, _, path = text.partition("=") if "=" in text and not Path(text).exists() else ("", "", text)
    run = open_results(path, name or None)
    if run.frame.empty:
        raise ResultsError(f"{run.path}: no scored rows with a known label; the report needs labelled results")
    return run
