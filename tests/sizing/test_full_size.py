"""Full-size proofs of every production config (``jobs/configs/*.yaml``; a new file is covered automatically), on
synthetic data of the configured size (``meddiff.sizing.proof``): networks at paper scale checked against
``meddiff.sizing.proof.EXPECTED``, one real training step at batch 1 on the CPU (fp32), the bundle round trip, and
two images scored at N = 2.

CI budget (2 cores): a config whose networks and training path are those of a config proved before it (the ISIC
twins of the CheXpert configs: same method, model, diffusion, method options, image size, channels, augmentation) is
checked on the meta device and proved through its twin. Every config steps in fp32; the paper's UNet is scored with
every stopping rule, the others with ``futility`` (the engine, a sequential stopping test and the referral decision
in one rule). The configured bf16 step of the UNet and DiT runs with ``MEDDIFF_FULL_PROOFS=1``, which also scores
the DiT with every rule: bf16 autocast on this CPU takes ~10x fp32's time, on one core (tens of minutes for the
UNet), so CI cannot afford it.

All configs share one workdir and run in ``proof_order`` (the D-Cube config reads the diffusion run its
``diffusion_checkpoint`` names from it)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from meddiff.config import load_config, to_dict
from meddiff.rules import STOPPING_RULES
from meddiff.sizing.proof import (EXPECTED, NetworkProof, ProofResult, check_expected, proof_order, proof_table,
                                  prove)

REPO = Path(__file__).resolve().parents[2]
CONFIGS = proof_order(sorted((REPO / "jobs" / "configs").glob("*.yaml")))
CI_RULES = ["futility"]
EVERY_RULE = {"chexpert-unet-a100"}  # the paper's UNet: every stopping rule at full size
FULL = os.environ.get("MEDDIFF_FULL_PROOFS", "") == "1"


def twin_key(path: Path) -> str:
    """What decides the networks and the training code path a proof exercises (not the data source's rows)."""
    cfg = load_config(path)
    d = to_dict(cfg)
    return repr((cfg.method, d["model"], d["diffusion"], d["method_options"], cfg.data.image_size,
                 cfg.data.channels, cfg.train.augment))


def twin_of(path: Path) -> Path | None:
    """The first config in ``CONFIGS`` before ``path`` with the same ``twin_key``, or None."""
    key = twin_key(path)
    for other in CONFIGS[:CONFIGS.index(path)]:
        if twin_key(other) == key:
            return other
    return None


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
    twin = twin_of(config)
    rules = list(STOPPING_RULES) if config.stem in EVERY_RULE else CI_RULES
    result = prove(config, workdir, precision="fp32", rules=rules, twin=twin.name if twin else "")
    print(proof_table([result]))
    assert result.passed, result.failures
    assert result.networks and not check_expected(result)
    if twin is not None:
        assert not result.ran and twin.name in result.meta_only[0], result.meta_only
        return
    if result.meta_only:  # only configs whose pretrained weights are not on this machine (Stable Diffusion)
        assert not result.ran and "not on this machine" in result.meta_only[0], result.meta_only
        return
    assert result.step_seconds is not None and result.step_seconds >= 0 and result.peak_rss_gb  # D-Cube's head: ~0 s
    assert result.bundle_gb and result.bundle_gb > 0
    assert set(result.scored) in ({*rules}, {"(no draws)"}), result.scored
    for rule, rec in result.scored.items():
        assert rec["rows"] == 2 and rec["ok"] == 2 and not rec["problems"], (rule, rec)


@pytest.mark.slow
@pytest.mark.skipif(not FULL, reason="the DiT with every stopping rule adds ~1.5 min on 2 cores; MEDDIFF_FULL_PROOFS=1 "
                                     "runs it")
def test_every_stopping_rule_on_the_dit(tmp_path: Path):
    result = prove(REPO / "jobs" / "configs" / "chexpert-dit-a100.yaml", tmp_path, precision="fp32")
    assert result.passed, result.failures
    assert list(result.scored) == list(STOPPING_RULES)
    for rule, rec in result.scored.items():
        assert rec["ok"] == 2 and not rec["problems"], (rule, rec)


@pytest.mark.slow
@pytest.mark.skipif(not FULL, reason="bf16 autocast on this CPU is ~10x slower than fp32 (tens of minutes for the UNet); "
                                     "MEDDIFF_FULL_PROOFS=1 runs the configured bf16 step")
@pytest.mark.parametrize("name", ["chexpert-unet-a100", "chexpert-dit-a100"])
def test_configured_bf16_step(name: str, tmp_path: Path):
    config = REPO / "jobs" / "configs" / f"{name}.yaml"
    assert load_config(config).train.precision == "bf16"
    result = prove(config, tmp_path, rules=CI_RULES)
    assert result.precision == "bf16" and result.passed, result.failures


def test_check_expected_names_the_difference():
    result = ProofResult(config="x.yaml", name="x", method="diffusion",
                         networks=[NetworkProof("denoiser", 10, None, [1, 12, 128, 128], [1, 12, 128, 128])])
    table = {"x": {"denoiser": {"parameters": 11, "output_shape": [1, 12, 128, 128]}}}
    assert check_expected(result, table) == ["x/denoiser: parameters is 10, expected 11"]
    assert check_expected(result, {"x": {"head": {"parameters": 1}}}) == [
        "x: network 'head' was not built (built: ['denoiser'])"]
    assert "no row" in check_expected(result, {})[0]


def test_twins_are_the_isic_copies_of_chexpert_configs():
    twins = {p.stem: twin_of(p).stem for p in CONFIGS if twin_of(p) is not None}
    assert twins, "no twins: every config is proved in full"
    for config, twin in twins.items():
        assert config.startswith("isic-") and twin == config.replace("isic-", "chexpert-", 1)
