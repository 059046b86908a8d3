"""The GPU acceptance run (jobs/gpu_check.py over meddiff.bench.acceptance) in its CPU mode: the script runs every code
path end to end and writes its JSON, a real-data run goes through the config's data source, the checks fail when bf16
decides otherwise than fp32 (and the script then exits non-zero), and user errors are named. Figures are never
asserted; the Ray job run is in tests/ray/test_jobs.py (it shares that module's job server)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from meddiff.bench.acceptance import (CPU_MODEL, DEFAULT_CONFIG, AcceptanceConfig, Scoring, agreement_checks,
                                      experiment_config, resolve_mode, vote_margins, with_mode_defaults)
from meddiff.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / DEFAULT_CONFIG)


def gpu_check_script():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "jobs" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_result(result: dict, n_draws: int, images: int, rules=("mixture", "futility")) -> None:
    """What every CPU-mode result holds, whatever the figures."""
    assert result["mode"] == "cpu" and result["device"] == "cpu" and result["torch"] == torch.__version__
    assert result["code_version"].startswith("meddiff ") and result["n_draws"] == n_draws
    assert result["images"] == images and result["classes"] == 2
    cap = n_draws * 2
    names = [v["name"] for v in result["variants"]]
    expected = ["reference, fp32", "reference, bf16", "engine, fp32", "engine, bf16"]
    expected += [f"{r}@0.01, {p}" for r in rules for p in ("fp32", "bf16")]
    assert names == expected
    for v in result["variants"]:
        assert v["images"] == images and v["images_per_s"] > 0 and 0 < v["mfu"] and v["peak_rss_mib"] > 0
        if v["rule"] == "none":
            assert v["nfe_per_image"] == cap
        else:
            assert 2 <= v["nfe_per_image"] <= cap
    assert result["model"]["flops_per_forward"] > 0 and result["train"]["steps_per_s"] > 0
    checks = {c["name"]: c for c in result["checks"]}
    decisions = {f"bf16 vs fp32 decisions: {n}" for n in ("reference", "engine", *(f"{r}@0.01" for r in rules))}
    assert set(checks) == decisions | {"engine vs paper loop, fp32, full N: class", "every variant ran"}
    assert checks["every variant ran"]["passed"] and checks["every variant ran"]["failures"] == []
    assert all(0 <= c["value"] <= 1 and c["passed"] == (c["value"] >= c["threshold"]) for c in checks.values())
    assert "draw_vote_flips" in checks["bf16 vs fp32 decisions: reference"]
    assert result["passed"] == all(c["passed"] for c in checks.values())


@pytest.mark.slow
def test_cpu_mode_runs_as_a_script_and_writes_its_json(tmp_path):
    """The default command on a machine without CUDA: the production config's conditioning at toy size on phantoms."""
    out = tmp_path / "gpu_check.json"
    env = dict(os.environ, PYTHONPATH=str(REPO / "platform"))
    proc = subprocess.run([sys.executable, "jobs/gpu_check.py", "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    result = json.loads(out.read_text())
    assert proc.returncode == (0 if result["passed"] else 1), proc.stderr[-2000:]
    check_result(result, n_draws=5, images=4)
    assert result["model"]["data"] == "phantom" and result["model"]["image_size"] == 32
    assert result["model"]["params"]["conditioning"] == "cross_attention"  # the paper's, from the config
    assert f"wrote {out}" in proc.stdout


@pytest.mark.slow
def test_real_data_run_through_the_configs_data_source(tmp_path, pneumonia_npz):
    """--data config with --set overrides: trained and scored on real PneumoniaMNIST, one early-exit rule."""
    out = tmp_path / "real.json"
    code = gpu_check_script().main([
        "--config", CONFIG, "--data", "config", "--set", "data.source=medmnist",
        "--set", f"data.params={{path: {pneumonia_npz}}}", "--set", "data.derive={}", "--steps", "2", "--images", "4",
        "--n-draws", "3", "--rules", "futility",
        "--out", str(out)])
    result = json.loads(out.read_text())
    assert code == (0 if result["passed"] else 1)
    check_result(result, n_draws=3, images=4, rules=("futility",))
    assert result["model"]["data"] == "medmnist" and result["settings"]["overrides"]["data.source"] == "medmnist"


def scoring(name: str, pred, unc, errors=None) -> Scoring:
    kind = "reference" if name.startswith("reference") else "engine"
    return Scoring(name, kind, "none", name.split(", ")[-1], False, 1.0, np.array(pred), np.array(unc),
                   np.full(len(pred), 10), 0.0, 0.0, errors)


def test_checks_fail_when_bf16_decides_otherwise():
    # 5 images; the threshold 0.5 accepts an uncertainty at or below it. bf16 of the reference flips image 0's class
    # (both accept) and refers image 1 that fp32 accepts: 3 of 5 decisions agree.
    e32 = torch.tensor([[[1.0, 2.0], [2.0, 1.0]]] * 5)  # [B, C, N]: draws vote class 0, then class 1
    e16 = e32.clone()
    e16[0, :, 0] = torch.tensor([2.0, 1.0])
    scorings = [scoring("reference, fp32", [0, 1, 0, 1, 0], [0.1, 0.2, 0.3, 0.9, 0.1], e32),
                scoring("reference, bf16", [1, 1, 0, 1, 0], [0.1, 0.8, 0.3, 0.9, 0.1], e16),
                scoring("engine, fp32", [0, 1, 0, 1, 0], [0.1, 0.2, 0.3, 0.9, 0.1], e32),
                scoring("engine, bf16", [0, 1, 0, 1, 0], [0.1, 0.2, 0.3, 0.9, 0.1], e32)]
    checks = {c["name"]: c for c in agreement_checks(scorings, 0.5, np.zeros(5, dtype=int), min_agreement=0.9)}
    ref = checks["bf16 vs fp32 decisions: reference"]
    assert (ref["value"], ref["disagreements"], ref["class_agreement"], ref["passed"]) == (0.6, 2, 0.8, False)
    assert ref["draw_vote_flips"] == 0.1  # one draw of ten
    assert checks["bf16 vs fp32 decisions: engine"]["passed"] and checks["engine vs paper loop, fp32, full N: class"][
        "value"] == 1.0
    assert vote_margins(e32).flatten().tolist() == [0.5] * 10


def test_the_script_exits_non_zero_when_a_check_fails(tmp_path, monkeypatch, capsys):
    module = gpu_check_script()
    failed = {"passed": False, "mode": "cpu", "device_name": "x", "images": 2, "n_draws": 3,
              "model": {"parameters": 1}, "train": {"images_per_s": 1.0, "mfu": 0.1, "peak_gpu_mib": 0.0},
              "variants": [], "checks": [{"name": "bf16 vs fp32 decisions: engine", "value": 0.5, "threshold": 0.9,
                                          "passed": False}]}
    monkeypatch.setattr(module, "run_acceptance", lambda acc: failed)
    assert module.main(["--out", str(tmp_path / "r.json")]) == 1
    assert "FAIL bf16 vs fp32 decisions: engine: 0.5000" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["passed"] is False
    # a user error: named on one line, exit code 2
    assert module.main(["--min-agreement", "1.5"]) == 2
    assert "min_agreement: expected a fraction in [0, 1], got 1.5" in capsys.readouterr().err


def test_the_production_config_as_each_mode_trains_it(tmp_path):
    gpu = experiment_config(with_mode_defaults(AcceptanceConfig(config=CONFIG), "gpu"), "gpu", tmp_path)
    assert gpu.model.params["block_out_channels"] == [128, 128, 256, 512, 1024]  # the paper's UNet, untouched
    assert (gpu.data.source, gpu.data.image_size, gpu.data.channels) == ("phantom", 256, 3)
    assert (gpu.train.steps, gpu.train.checkpoint_every, gpu.train.batch_size, gpu.train.precision) == (300, 300, 128,
                                                                                                         "bf16")
    assert gpu.train.warmup_steps == 60 and gpu.run_dir == tmp_path / "gpu-check" and gpu.score.n_draws == 501
    # enough phantoms for 64 test images at the config's 10 % test split
    assert gpu.data.params["n_per_class"] * 2 * gpu.data.split_fractions[2] >= 64
    cpu = experiment_config(with_mode_defaults(AcceptanceConfig(config=CONFIG), "cpu"), "cpu", tmp_path)
    assert {k: cpu.model.params[k] for k in CPU_MODEL} == CPU_MODEL and cpu.data.image_size == 32
    assert cpu.model.params["conditioning"] == "cross_attention" and cpu.train.precision == "fp32"
    real = experiment_config(AcceptanceConfig(config=CONFIG, data_root="/data/CheXpert-v1.0-small", steps=10),
                             "gpu", tmp_path)
    assert (real.data.source, real.data.params["root"]) == ("chexpert", "/data/CheXpert-v1.0-small")


def test_user_errors_are_named(tmp_path):
    with pytest.raises(ConfigError, match="needs a diffusion config .* got 'baseline'"):
        experiment_config(AcceptanceConfig(config=str(REPO / "jobs/configs/chexpert-resnet50-a100.yaml"), steps=2),
                          "cpu", tmp_path)
    with pytest.raises(ConfigError, match="unknown stopping rule 'nope'"):
        AcceptanceConfig(rules=("nope",))
    with pytest.raises(ConfigError, match="'none' .* always runs"):
        AcceptanceConfig(rules=("none",))
    with pytest.raises(ConfigError, match="data: expected 'synthetic'"):
        AcceptanceConfig(data="real")
    with pytest.raises(ConfigError, match="images: expected at least 2"):
        AcceptanceConfig(images=1)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_mode("gpu")
        assert resolve_mode("auto") == "cpu"
