"""Full-size proofs of every production config (``jobs/configs/*.yaml``; a new file is covered automatically):
networks at paper scale checked against ``meddiff.sizing.proof.EXPECTED``, one real training step at batch 1 on the
CPU (fp32; the configured bf16 step of the paper's UNet and DiT is its own test), the bundle round trip and scoring two
images at N = 2 with every stopping rule, on synthetic data of the configured size (``meddiff.sizing.proof``).

All configs share one workdir, proved in ``proof_order`` (the D-Cube config reads the diffusion run its
``diffusion_checkpoint`` names from it); every config is proved once, whatever the number of rules."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from meddiff.config import load_config
from meddiff.rules import STOPPING_RULES
from meddiff.sizing.proof import EXPECTED, ProofResult, check_expected, proof_order, proof_table, prove

REPO = Path(__file__).resolve().parents[2]
CONFIGS = proof_order(sorted((REPO / "jobs" / "configs").glob("*.yaml")))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prove")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)  # full-size bundles: several GB


def test_every_config_has_its_paper_row():
    names = {load_config(p).name for p in CONFIGS}
    assert names <= set(EXPECTED), f"configs without a row in EXPECTED: {sorted(names - set(EXPECTED))}"


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_full_size_proof(config: Path, workdir: Path):
    result = prove(config, workdir, precision="fp32")
    print(proof_table([result]))
    assert result.passed, result.failures
    assert result.networks and not check_expected(result)
    if result.meta_only:  # only configs whose weights are not on this machine
        assert not result.ran and "not on this machine" in result.meta_only[0]
        return
    assert result.step_seconds is not None and result.step_seconds > 0
    assert result.bundle_gb and result.bundle_gb > 0
    rules = set(result.scored)
    assert rules == set(STOPPING_RULES) or rules == {"(no draws)"}, rules
    for rule, rec in result.scored.items():
        assert rec["rows"] == 2 and rec["ok"] == 2 and not rec["problems"], (rule, rec)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["chexpert-unet-a100", "chexpert-dit-a100"])
def test_configured_bf16_step(name: str, tmp_path: Path):
    """The configs' own precision (bf16 autocast; on the CPU about an order of magnitude slower than fp32)."""
    config = REPO / "jobs" / "configs" / f"{name}.yaml"
    assert load_config(config).train.precision == "bf16"
    result = prove(config, tmp_path, rules=["exact"])
    assert result.precision == "bf16" and result.passed, result.failures
    assert result.scored["exact"]["ok"] == 2


def test_check_expected_names_the_difference():
    from meddiff.sizing.proof import NetworkProof

    result = ProofResult(config="x.yaml", name="x", method="diffusion",
                         networks=[NetworkProof("denoiser", 10, None, [1, 12, 128, 128], [1, 12, 128, 128])])
    table = {"x": {"denoiser": {"parameters": 11, "output_shape": [1, 12, 128, 128]}}}
    assert check_expected(result, table) == ["x/denoiser: parameters is 10, expected 11"]
    assert check_expected(result, {}) and "no row" in check_expected(result, {})[0]
