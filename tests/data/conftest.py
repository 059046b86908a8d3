"""Fixtures for the data tests: the shared real data (skip when absent, fail under CI=true) and image writers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture
def shared_data():
    """Return a function rel -> absolute path under ../shared/data; skips if missing, fails when CI=true."""

    def resolve(relative: str) -> Path:
        path = SHARED_DATA / relative
        if not path.exists():
            message = f"real data {path} is missing (expected ../shared/data next to the repository)"
            if os.environ.get("CI") == "true":
                pytest.fail(f"{message}; CI=true requires it")
            pytest.skip(message)
        return path

    return resolve


@pytest.fixture
def write_image():
    """Return a function (path, size=(w, h), mode="RGB", fmt=None, seed=0) -> path that writes a small random image."""

    def write(path: Path, size=(24, 20), mode: str = "RGB", fmt: str | None = None, seed: int = 0) -> Path:
        rng = np.random.default_rng(seed)
        shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
        image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
        if mode not in ("RGB", "L"):
            image = image.convert(mode)
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, format=fmt)
        return path

    return write
