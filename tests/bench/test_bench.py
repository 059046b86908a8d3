"""The benchmark's correctness (never its speed): the paper's loop and the engine agree image by image, and a small
benchmark run writes every variant with consistent NFE accounting."""

import json

import torch

from meddiff.bench.reference import reference_errors
from meddiff.bench.run import run_benchmark
from meddiff.diffusion.engine import EngineSpec, draw_errors
from meddiff.diffusion.model import load_diffusion_model
from meddiff.diffusion.noise import image_seed


def test_reference_loop_equals_class_batched_engine(tiny_checkpoint):
    model = load_diffusion_model(tiny_checkpoint)
    x = torch.randn(3, *model.model_shape)
    seeds = [image_seed(0, f"i{k}") for k in range(3)]
    spec = EngineSpec(num_classes=2, schedule=model.schedule, max_batch=64)
    ref = reference_errors(model.denoiser, x, seeds, 7, spec)
    eng, _ = draw_errors(model.denoiser, x, seeds, range(7), spec)
    assert torch.allclose(ref, eng, rtol=1e-4, atol=1e-6)


def test_small_benchmark_run(tiny_checkpoint, tmp_path):
    out = run_benchmark(tiny_checkpoint, tmp_path, n_images=12, n_draws=21, batch_size=4, deltas=(0.05,), chunk=3, replay_chunks=(1, 3),
                        ray_actors=(), log=lambda _line: None)
    names = [v["name"] for v in out["variants"]]
    assert names == ["reference", "engine", "exact", "wilson@0.05", "hoeffding@0.01", "mixture@0.05",
                     "mixture@0.05 every draw", "wilson_per_look@0.05"]
    v = {x["name"]: x for x in out["variants"]}
    assert v["reference"]["nfe_per_image"] == v["engine"]["nfe_per_image"] == 42
    assert v["engine"]["agreement"] == 1.0 and v["exact"]["agreement"] == 1.0
    assert v["exact"]["nfe_per_image"] <= 42 and v["wilson@0.05"]["nfe_per_image"] <= v["exact"]["nfe_per_image"]
    assert all(x["mfu"] > 0 and x["peak_rss_mb"] > 0 for x in out["variants"])
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["ratios"]["exact NFE reduction vs N"] >= 1.0
    assert "| reference |" in (tmp_path / "bench.md").read_text()
    # the replay of a rule at the measured chunk reproduces the measured variant's NFE and agreement
    replay = {(r["rule"], r["delta"], r["chunk"]): r for r in saved["replay"]}
    for name, key in [("exact", ("exact", None, 3)), ("wilson@0.05", ("wilson", 0.05, 3)),
                      ("mixture@0.05", ("mixture", 0.05, 3)), ("mixture@0.05 every draw", ("mixture", 0.05, 1))]:
        assert replay[key]["nfe_per_image"] == v[name]["nfe_per_image"]
        assert replay[key]["agreement"] == v[name]["agreement"]
