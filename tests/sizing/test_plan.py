"""The capacity plan: parameter counts of every production config against their references, the plan's arithmetic
against hand-computed values, bench files, and `meddiff plan` on the paper's UNet and DiT configs."""

import json
from pathlib import Path

import pytest

from meddiff.cli import main
from meddiff.config import load_config
from meddiff.models import count_parameters
from meddiff.sizing.footprint import Footprint
from meddiff.sizing.hardware import GPU, GPUS
from meddiff.sizing.networks import full_size_networks
from meddiff.sizing.plan import BenchFileError, make_plan, read_bench
from meddiff.sizing.reference import REFERENCES, references_for

CONFIGS = Path(__file__).resolve().parents[2] / "jobs" / "configs"
GIB = 2**30


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_production_network_has_its_reference_count(path):
    refs = references_for(path.stem)  # a new config needs an entry in sizing/reference.py
    nets = full_size_networks(path)
    assert sorted(nets) == sorted(refs)
    for name, net in nets.items():
        ref = refs[name]
        assert count_parameters(net) == ref.ours, (path.name, name)


def test_the_differences_add_up():
    for key, ref in REFERENCES.items():
        assert ref.explained == ref.ours - (ref.reference or 0), key


def test_timm_references_are_the_published_counts():
    import timm
    import torch

    for key, timm_name in [("resnet18", "resnet18"), ("resnet50", "resnet50"), ("efficientnet_b0", "efficientnet_b0"),
                           ("efficientnet_b4", "efficientnet_b4"), ("vit_s16", "vit_small_patch16_224"),
                           ("vit_b16", "vit_base_patch16_224"), ("swin_b", "swin_base_patch4_window7_224")]:
        with torch.device("meta"):
            net = timm.create_model(timm_name, pretrained=False)
        assert count_parameters(net) == REFERENCES[key].reference, key


def footprint(**kw):
    base = dict(parameters=1000, trainable_parameters=1000, weight_bytes=4000, flops_per_forward=10**12,
                train_activation_bytes_per_image=GIB, train_activation_bytes_fixed=0,
                inference_activation_bytes_per_image=2**20, inference_activation_bytes_fixed=0, trained=True,
                train_forwards=1, score_forwards=1002, ema=True, dtype="bfloat16")
    return Footprint(**{**base, **kw})


TEST_GPU = GPU("test", 100 * GIB, 100e12, 50e12, 10e12, 1e12)
BENCH = {"n_draws": 501, "variants": [{"name": "reference", "nfe_per_image": 1002.0, "agreement": 1.0},
                                      {"name": "engine", "nfe_per_image": 1002.0, "agreement": 1.0},
                                      {"name": "mixture@0.01", "nfe_per_image": 100.2, "agreement": 0.99}]}


def test_plan_arithmetic_by_hand():
    cfg = load_config(CONFIGS / "chexpert-unet-a100.yaml")  # 100000 steps of 128, N = 501, 64 in flight, bf16
    p = make_plan(cfg, {"denoiser": footprint()}, TEST_GPU, gpus=2, classes=2, mfu=0.5, cohort=1000, bench=BENCH,
                  decode_rate=0.01, votes=True)
    # memory: 90 GiB usable; 1000 parameters x (4 + 4 + 8 + 4 EMA) bytes; 1 GiB per image
    assert p.train_static_bytes == 20_000
    assert p.train_max_batch_per_gpu == 89 and p.train_batch_per_gpu == 64 and p.train_fits
    # time: 3 x 1 TFLOP per image x 128 images x 100000 steps over 2 GPUs x 100 TFLOP/s x 0.5
    assert p.train_flops_per_image == 3e12
    assert p.train_hours == pytest.approx(3e12 * 128 * 100_000 / (2 * 100e12 * 0.5) / 3600)
    assert p.train_gpu_hours == pytest.approx(2 * p.train_hours)
    # scoring: 1002 forwards of 1 TFLOP at 50 TFLOP/s
    assert p.score_seconds_per_image == pytest.approx(20.04)
    assert p.cohort_gpu_hours == pytest.approx(1000 * 20.04 / 3600) and p.cohort_hours == pytest.approx(
        p.cohort_gpu_hours / 2)
    # both classes of an image share the forward batch: 2 MiB per image in flight
    assert p.score_bytes_per_image == 2 * 2**20 and p.score_max_images_in_flight == (90 * GIB - 4000) // (2 * 2**20)
    # early exit: the engine at full N is no early exit; mixture cuts the forwards 10x
    assert [(r.rule, r.nfe_reduction) for r in p.early_exit] == [("mixture@0.01", 10.0)]
    assert p.early_exit[0].seconds_per_image == pytest.approx(2.004)
    assert p.early_exit[0].cohort_gpu_hours == pytest.approx(1000 * 2.004 / 3600)
    # Ray: one actor per GPU at 1 / 20.04 images/s, decoding 0.01 images/s per core -> 5 cores
    assert p.actors_per_gpu == 1 and p.cpus_per_actor == 5
    # training: 50 TFLOP/s over 3 TFLOP per image = 16.7 images/s per GPU -> 1667 cores at 0.01 images/s per core
    assert p.train_images_per_s == pytest.approx(50 / 3) and p.cpus_per_worker == 1667
    assert any("decoding bounds scoring" in n for n in p.notes)


def test_a_batch_that_does_not_fit_is_said_and_a_method_without_draws_ignores_the_bench():
    cfg = load_config(CONFIGS / "chexpert-unet-a100.yaml")
    p = make_plan(cfg, {"denoiser": footprint()}, TEST_GPU, gpus=1, classes=2, bench=BENCH, votes=False)
    assert p.train_batch_per_gpu == 128 and not p.train_fits
    assert any("2 gradient-accumulation steps" in n for n in p.notes)
    assert p.early_exit == () and "no draws" in p.early_exit_note


def test_bad_bench_files_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bench.json"
    bad.write_text(json.dumps({"n_draws": 5, "variants": [{"name": "reference", "agreement": 1.0}]}))
    with pytest.raises(BenchFileError, match=r"bench.json: variants\[0\] has no \['nfe_per_image'\]"):
        read_bench(bad)
    bad.write_text("{")
    with pytest.raises(BenchFileError, match="cannot read it as JSON"):
        read_bench(bad)


def test_the_gpu_table():
    assert GPUS["a100"].peak_flops("bf16") == 312e12 and GPUS["a100"].peak_flops("fp32") == 156e12
    assert GPUS["h100"].bf16_flops == GPUS["h200"].bf16_flops and GPUS["h200"].memory_bytes > GPUS["h100"].memory_bytes


@pytest.mark.slow
@pytest.mark.parametrize("name,params", [("chexpert-unet-a100", 385_787_148), ("chexpert-dit-a100", 138_500_544)])
def test_meddiff_plan_with_and_without_a_bench_file(name, params, tmp_path, capsys):
    config = str(CONFIGS / f"{name}.yaml")
    out = tmp_path / "plan.json"
    assert main(["plan", config, "--gpus", "8", "--cohort", "200000", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "8 x A100 80 GB SXM" in text and "denoiser" in text and "full N only: give --bench" in text
    plan = json.loads(out.read_text())
    assert plan["parameters"] == params and plan["n_draws"] == 501 and plan["train_fits"]
    net = plan["networks"]["denoiser"]
    assert net["score_forwards"] == 1002
    seconds = 1002 * net["flops_per_forward"] / (312e12 * 0.30)
    assert plan["score_seconds_per_image"] == pytest.approx(seconds)
    assert plan["cohort_gpu_hours"] == pytest.approx(200000 * seconds / 3600)
    assert plan["early_exit"] == [] and plan["cpus_per_actor"] is None

    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(BENCH))
    assert main(["plan", config, "--gpus", "8", "--gpu", "h100", "--bench", str(bench), "--mfu", "0.4",
                 "--decode-rate", "100", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mixture@0.01" in text and "NFE reductions measured by meddiff bench at N = 501" in text
    plan = json.loads(out.read_text())
    full = 1002 * net["flops_per_forward"] / (989e12 * 0.4)
    assert plan["score_seconds_per_image"] == pytest.approx(full)
    assert plan["early_exit"][0]["seconds_per_image"] == pytest.approx(full / 10)
    assert plan["cpus_per_actor"] == 1


def test_meddiff_plan_refuses_a_bad_gpu_count(capsys):
    assert main(["plan", str(CONFIGS / "chexpert-resnet18-a100.yaml"), "--gpus", "0"]) == 2
    assert "--gpus: expected at least 1 GPU" in capsys.readouterr().err


def test_scoring_runs_at_the_peak_of_its_own_precision():
    cfg = load_config(CONFIGS / "chexpert-unet-a100.yaml", {"score.precision": "fp32"})
    p = make_plan(cfg, {"denoiser": footprint()}, TEST_GPU, gpus=1, classes=2, mfu=0.5, votes=True)
    assert p.score_seconds_per_image == pytest.approx(1002e12 / (50e12 * 0.5))  # the TF32 peak
    assert p.train_flops_per_image == 3e12 and p.train_images_per_s == pytest.approx(100e12 * 0.5 / 3e12)
