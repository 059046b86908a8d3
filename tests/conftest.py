"""Shared fixtures: the real data folder (fail in CI when it is missing, skip elsewhere) and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEDDIFF_DATA", REPO.parent / "shared" / "data"))


def require_data(relative: str) -> Path:
    """Path of a real data file; missing -> fail under CI=true (real-data tests must run there), else skip."""
    path = SHARED_DATA / relative
    if not path.exists():
        message = f"real data {path} is missing (tests read ../shared/data or $MEDDIFF_DATA)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def pneumonia_npz() -> Path:
    return require_data("pneumoniamnist_balanced/pneumoniamnist_balanced.npz")


@pytest.fixture(autouse=True)
def _small_threads():
    # two cores: keep each test to them and make results independent of other tests' thread settings
    torch.set_num_threads(2)
    yield


TINY_MODEL = {"block_out_channels": [16, 32], "attention": [False, True], "norm_num_groups": 8}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny diffusion classifier trained for a few steps on real PneumoniaMNIST (28 px, wavelet 4 x 14 x 14)."""
    require_data("pneumoniamnist_balanced/pneumoniamnist_balanced.npz")
    from meddiff.config import load_config
    from meddiff.methods.diffusion.train import train_diffusion

    out = tmp_path_factory.mktemp("tiny-run")
    cfg = load_config("demo-pneumonia", {
        "output_dir": str(out), "name": "tiny", "train.steps": 20, "train.log_every": 10,
        "train.checkpoint_every": 20, "model.params": TINY_MODEL, "train.num_threads": 2,
    })
    return train_diffusion(cfg)


@pytest.fixture
def deterministic_torch():
    """Deterministic kernels where torch has them (restored afterwards). Threads are set by each test's config."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)
