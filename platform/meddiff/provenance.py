"""Code version and hashing helpers stamped on every artefact (checkpoints, results, reports)."""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path

import meddiff


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``meddiff <version>+g<commit>[.dirty]`` when running from a git checkout, else ``meddiff <version>``."""
    root = Path(meddiff.__file__).resolve().parents[2]
    version = f"meddiff {meddiff.__version__}"
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return version
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        )
        suffix = ".dirty" if dirty.returncode == 0 and dirty.stdout.strip() else ""
        return f"{version}+g{commit.stdout.strip()}{suffix}"
    except (OSError, subprocess.SubprocessError):
        return version


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
