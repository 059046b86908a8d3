"""A results root: the one folder a reader (the dashboard) may read, the results sets and explanation folders under
it, and a cache key of a folder's files.

Every path, including the PNG paths an explanation index holds, goes through ``ResultsRoot.resolve``, which refuses
anything outside the root (``..``, absolute paths elsewhere, symlinks out). A results set or explanation folder is
opened only when none of its files (meta.json, parquet parts, explain.json, index/ parts, png/ images) is a symlink
leading out of the root (``ResultsRoot.check_files``): a part-0.parquet linked to /etc/... is refused, not read.

    root = ResultsRoot("runs")                 # or ResultsRoot.from_env() (MEDDIFF_RESULTS_ROOT, set by meddiff dashboard)
    runs = [root.open_run(p) for p in root.find_runs()]
"""

from __future__ import annotations

import os
from pathlib import Path

from meddiff.errors import ResultsError
from meddiff.results.explanations import INDEX_DIR, is_explanation
from meddiff.results.runs import ResultsSet, open_results
from meddiff.results.store import META_FILE, part_files

ROOT_ENV = "MEDDIFF_RESULTS_ROOT"
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

    def check_files(self, folder: Path) -> None:
        """OutsideRootError when a file of ``folder`` (or of its index/ and png/ folders) resolves outside the root:
        a file symlink inside the root that points elsewhere."""
        for sub in (folder, folder / INDEX_DIR, folder / "png"):
            if not sub.is_dir():
                continue
            for entry in sorted(sub.iterdir()):
                if not entry.is_symlink():
                    continue
                target = entry.resolve()
                if target != self.path and self.path not in target.parents:
                    raise OutsideRootError(f"{self.name(entry.parent)}/{entry.name} is a symlink to {target}, outside "
                                           f"the results root {self.path}; the dashboard does not follow links out of "
                                           f"the root (copy the file into the results set instead)")

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

    def open_run(self, path: str | Path) -> ResultsSet:
        """The results set at ``path`` (checked to be under the root), named by its path under the root; only its
        meta.json is read here."""
        full = self.resolve(path)
        self.check_files(full)
        return open_results(full, name=self.name(full))

    def _walk(self, start: Path) -> list[Path]:
        found = []
        for folder, dirs, _ in os.walk(start, followlinks=False):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
            found.append(Path(folder))
        return sorted(found)


def is_results_set(path: Path) -> bool:
    """Whether ``path`` holds meta.json and at least one part file."""
    return (path / META_FILE).is_file() and bool(part_files(path))


def signature(path: Path) -> tuple:
    """Names, sizes and mtimes of a folder's parquet and JSON files: a cache key that changes when results change."""
    files = sorted([*path.glob("*.parquet"), *path.glob("*.json"), *(path / INDEX_DIR).glob("*.parquet")])
    return tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)
