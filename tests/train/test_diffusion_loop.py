"""The diffusion training loop is a function of its config: same seed, same weights, whatever the global RNG did."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from meddiff.config import load_config
from meddiff.methods.diffusion.train import train_diffusion
from tests.conftest import TINY_MODEL


def _train(out, seed: int, pneumonia_npz) -> dict[str, torch.Tensor]:
    cfg = load_config("demo-pneumonia", {
        "output_dir": str(out), "name": "seeded", "data.params.path": str(pneumonia_npz), "train.steps": 2,
        "train.log_every": 2, "train.checkpoint_every": 2, "train.batch_size": 8, "model.params": TINY_MODEL,
        "train.num_threads": 2, "train.seed": seed,
    })
    return load_file(str(train_diffusion(cfg) / "model.safetensors"))


def test_same_seed_gives_identical_weights_whatever_the_global_rng(tmp_path, pneumonia_npz):
    torch.manual_seed(1)
    a = _train(tmp_path / "a", 7, pneumonia_npz)
    torch.manual_seed(2)  # a different global stream (an unseeded process starts from a random one)
    torch.rand(1000)
    b = _train(tmp_path / "b", 7, pneumonia_npz)
    c = _train(tmp_path / "c", 8, pneumonia_npz)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)  # the seed is what decides them
