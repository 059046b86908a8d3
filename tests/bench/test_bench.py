"""The benchmark's correctness (never its speed): the paper's loop and the engine agree image by image, and a small
benchmark run writes every variant with consistent NFE accounting."""

import json

import torch

from meddiff.bench.reference import reference_errors
from meddiff.bench.replay import near_tied_draws
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


def test_near_tied_draws_are_counted_per_image():
    # image 0: draws with gaps 1e-5 (tied), 2 and 1 relative to the larger; image 1: an exact tie and a clear draw
    errors = torch.tensor([[[1.0, 1.0, 2.0], [1.00001, 3.0, 1.0]], [[0.5, 0.1, 0.0], [0.5, 0.2, 0.0]]])
    assert near_tied_draws(errors).tolist() == [1, 2]  # the (0, 0) draw is a tie of two zero errors


def tied_images(out) -> int:
    return out["near_tied_images"]


def test_small_benchmark_run(tiny_checkpoint, tmp_path):
    out = run_benchmark(tiny_checkpoint, tmp_path, n_images=12, n_draws=21, batch_size=4, deltas=(0.05,), chunk=3, replay_chunks=(1, 3),
                        ray_actors=(), log=lambda _line: None)
    names = [v["name"] for v in out["variants"]]
    assert names == ["reference", "engine", "engine, stratified t", "engine, antithetic noise", "exact", "wilson@0.05",
                     "hoeffding@0.01", "mixture@0.05", "mixture@0.05 every draw", "wilson_per_look@0.05",
                     "futility@0.05", "futility@0.05 every draw", "futility@0.05, decision_z 2",
                     "mixture@0.05, stratified t",
                     "futility@0.05, stratified t"]
    v = {x["name"]: x for x in out["variants"]}
    assert v["reference"]["nfe_per_image"] == v["engine"]["nfe_per_image"] == 42
    assert v["engine, stratified t"]["nfe_per_image"] == v["engine, antithetic noise"]["nfe_per_image"] == 42
    assert v["engine, stratified t"]["draws"] == "stratified t" and v["engine"]["draws"] == "uniform"
    # decisions at the full vote's 80 % / 55 % coverage thresholds: the reference agrees with itself, covers what it
    # was fixed for, and every variant reports its decision agreement, accepted accuracy and NFE quantiles
    thresholds = out["referral_thresholds"]
    assert set(thresholds) == {"coverage_80", "coverage_55"} and thresholds["coverage_55"] <= thresholds["coverage_80"]
    ref = v["reference"]
    assert ref["decision_agreement_80"] == ref["decision_agreement_55"] == 1.0
    assert ref["coverage_80"] >= 0.8 and ref["coverage_55"] >= 0.55
    for x in out["variants"]:
        assert 0 <= x["decision_agreement_80"] <= 1 and x["nfe_median"] <= x["nfe_p90"] <= x["nfe_p99"] <= 42
        assert x["decision_disagreements_80"] == round((1 - x["decision_agreement_80"]) * 12)
    # Wald's bound: refer stops can only lower the least mean draws
    wald = {(r["delta"], r["stops on"]): r["draws_per_image"] for r in out["wald_bound"]}
    assert 0 < wald[(0.05, "leader or refer")] <= wald[(0.05, "leader")] <= 21
    # the decision guard only delays leader stops
    assert v["futility@0.05, decision_z 2"]["nfe_per_image"] >= v["futility@0.05"]["nfe_per_image"] - tied_images(out) * 42 / 12
    # the exact rule's decisions are the full vote's (up to near-tied draws)
    assert v["exact"]["decision_agreement_80"] >= 1 - tied_images(out) / 12
    # futility stops no later than the leader-only mixture rule at the same risk split: it only adds a way to stop
    assert v["futility@0.05"]["nfe_per_image"] <= v["mixture@0.05"]["nfe_per_image"] + 1e-9 or tied_images(out)
    # the same draws in other batch shapes: only images with near-tied draws may differ (bench.replay.NEAR_TIE)
    tied = out["near_tied_images"]
    assert 0 <= tied <= out["near_tied_draws"]
    assert v["engine"]["agreement"] >= 1 - tied / 12 and v["exact"]["agreement"] >= 1 - tied / 12
    assert v["exact"]["nfe_per_image"] <= 42 and v["wilson@0.05"]["nfe_per_image"] <= v["exact"]["nfe_per_image"]
    assert all(x["mfu"] > 0 and x["peak_rss_mb"] > 0 for x in out["variants"])
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["ratios"]["exact NFE reduction vs N"] >= 1.0
    assert "| reference |" in (tmp_path / "bench.md").read_text()
    # the replay of a rule at the measured chunk reproduces the measured variant's NFE and agreement
    replay = {(r["rule"], r["delta"], r["chunk"]): r for r in saved["replay"] if r["draws"] == "uniform"}
    replay.update({("stratified " + r["rule"], r["delta"], r["chunk"]): r for r in saved["replay"]
                   if r["draws"] == "stratified t"})
    layouts = {r["draws"] for r in saved["replay"]}
    assert layouts == {"uniform", "stratified t", "antithetic"}
    # stratified t is replayed on block boundaries only (chunk 3 = its block); antithetic sequential rows are flagged
    assert {r["chunk"] for r in saved["replay"] if r["draws"] == "stratified t" and r["rule"] != "exact"} == {3}
    assert all(not r["guarantee"] for r in saved["replay"] if r["draws"] == "antithetic" and r["rule"] != "exact")
    # (exactly, unless a near-tied draw voted the other way in the measured run: then within what its images can move)
    for name, key in [("exact", ("exact", None, 3)), ("wilson@0.05", ("wilson", 0.05, 3)),
                      ("mixture@0.05", ("mixture", 0.05, 3)), ("mixture@0.05 every draw", ("mixture", 0.05, 1)),
                      ("futility@0.05", ("futility", 0.05, 3)), ("futility@0.05 every draw", ("futility", 0.05, 1)),
                      ("mixture@0.05, stratified t", ("stratified mixture", 0.05, 3)),
                      ("futility@0.05, stratified t", ("stratified futility", 0.05, 3))]:
        assert abs(replay[key]["nfe_per_image"] - v[name]["nfe_per_image"]) <= tied * 42 / 12 + 0.05, name
        assert abs(replay[key]["agreement"] - v[name]["agreement"]) <= tied / 12 + 1e-4, name
        assert abs(replay[key]["decision_agreement_80"] - v[name]["decision_agreement_80"]) <= tied / 12 + 1e-4, name
    assert "near-tied draws" in (tmp_path / "bench.md").read_text()


def test_kernel_options_are_timed_and_compared_with_fp32(tiny_checkpoint, tmp_path):
    from meddiff.bench.kernels import run_kernels

    out = run_kernels(tiny_checkpoint, tmp_path, n_images=4, n_draws=2, repeats=1,
                      options=("fp32", "bf16 autocast", "channels-last"), widths=(4,), log=lambda _line: None)
    rows = {r["option"]: r for r in out["options"]}
    assert set(rows) == {"fp32", "bf16 autocast", "channels-last", "fp32, width 4"} and out["forwards"] == 4 * 2 * 2
    assert rows["fp32, width 4"]["max_relative_error_change"] < 1e-3 and rows["fp32, width 4"]["width"] == 4
    assert rows["fp32"]["speedup_vs_fp32"] == 1.0 and rows["fp32"]["max_relative_error_change"] == 0.0
    # bf16 changes the errors measurably; channels-last only by float rounding
    assert rows["bf16 autocast"]["max_relative_error_change"] > 1e-4
    assert rows["channels-last"]["max_relative_error_change"] < 1e-3
    assert all(r["forwards_per_s"] > 0 and 0 <= r["vote_flips"] <= 1 for r in rows.values())
    assert "| bf16 autocast |" in (tmp_path / "kernels.md").read_text()


def test_skipped_variants_are_left_out(tiny_checkpoint, tmp_path):
    keep = {"reference", "futility@0.05"}
    skip = ("engine", "engine, stratified t", "engine, antithetic noise", "exact", "wilson@0.05", "hoeffding@0.01",
            "mixture@0.05", "mixture@0.05 every draw", "wilson_per_look@0.05", "futility@0.05 every draw",
            "futility@0.05, decision_z 2", "mixture@0.05, stratified t", "futility@0.05, stratified t")
    out = run_benchmark(tiny_checkpoint, tmp_path, n_images=4, n_draws=9, batch_size=4, deltas=(0.05,), chunk=3,
                        replay_chunks=(3,), ray_actors=(), skip=skip, log=lambda _line: None)
    assert {v["name"] for v in out["variants"]} == keep
    assert {r["draws"] for r in out["replay"]} == {"uniform"}  # no other layout was scored at full N
