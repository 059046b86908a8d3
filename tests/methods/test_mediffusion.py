"""Mediffusion-style joint model: network shapes, seeded label subset, a tiny joint training that overfits phantoms,
bundle reload with identical predictions, schema-valid scoring rows, classifier-guided counterfactuals, and the
command line on real PneumoniaMNIST."""

import json

import numpy as np
import pytest
import torch

from meddiff.cli import main
from meddiff.config import DiffusionConfig, load_config
from meddiff.data import build_manifest
from meddiff.errors import ConfigError
from meddiff.methods import METHODS, predictor_class
from meddiff.methods.mediffusion.predictor import MediffusionPredictor
from meddiff.methods.mediffusion.train import (
    MediffusionOptions,
    build_mediffusion_model,
    joint_loss,
    labelled_mask,
    load_mediffusion_model,
    train_mediffusion,
)
from meddiff.methods.mediffusion.guidance import ClassifierGuidedSampler
from meddiff.models.unet import UNetConfig
from meddiff.methods.mediffusion.net import JointUNet
from meddiff.results import schema as S
from meddiff.methods import load_predictor
from meddiff.results.store import read_results

PRESET = "mediffusion-pneumonia"
TINY_UNET = {"block_out_channels": [16, 32], "attention": [False, True], "norm_num_groups": 8}
PHANTOMS = {"source": "phantom", "params": {"n_per_class": 6}, "image_size": 16, "channels": 1,
            "split_fractions": [1.0, 0.0, 0.0]}


def tiny_cfg(tmp_path, name, **overrides):
    base = {"output_dir": str(tmp_path), "name": name, "model.params": TINY_UNET, "train.num_threads": 1,
            "train.batch_size": 12, "train.warmup_steps": 0, "train.ema_warmup": 1000}
    return load_config(PRESET, {**base, **overrides})


@pytest.fixture(autouse=True)
def _one_thread():
    # a shared 2-core machine: for these tiny tensors two threads mostly wait on each other
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="module")
def phantom_run(tmp_path_factory):
    """A tiny joint model trained on 12 phantoms (all labelled) until its head separates them."""
    out = tmp_path_factory.mktemp("mediffusion")
    cfg = tiny_cfg(out, "overfit", data=PHANTOMS, **{
        "train.steps": 100, "train.lr": 1e-3, "train.log_every": 10, "train.checkpoint_every": 100,
        "method_options": {"label_fraction": 1.0, "classifier_t_max": 0.3, "head_hidden": 64}})
    torch.set_num_threads(1)
    return cfg, train_mediffusion(cfg)


def test_registered_without_votes():
    assert METHODS["mediffusion"].votes is False
    assert predictor_class("mediffusion") is MediffusionPredictor


def test_joint_unet_shapes_and_shared_encoder():
    torch.manual_seed(0)
    net = JointUNet(UNetConfig(**TINY_UNET), in_channels=4, sample_size=8, num_classes=3, head_hidden=16).eval()
    z, time = torch.randn(5, 4, 8, 8), torch.linspace(-3, 3, 5)
    v = net(z, time, torch.zeros(5, dtype=torch.long))
    assert v.shape == (5, 4, 8, 8)
    logits = net.classify(z, time)
    assert logits.shape == (5, 3)
    v2, logits2 = net.denoise_and_classify(z, time)
    assert torch.allclose(v, v2, atol=1e-5) and torch.allclose(logits, logits2, atol=1e-5)
    # the training call: decoder on the first batch, head on the second, one encoder pass over both
    v3, logits3 = net(z[:3], time[:3], None, cls_z=z[3:], cls_time=time[3:])
    assert v3.shape == (3, 4, 8, 8) and logits3.shape == (2, 3)
    assert torch.allclose(v3, v[:3], atol=1e-5) and torch.allclose(logits3, logits[3:], atol=1e-5)
    with pytest.raises(ConfigError, match="unconditional"):
        JointUNet(UNetConfig(**TINY_UNET, conditioning="cross_attention"), 4, 8, 3)


def test_labelled_mask_is_stratified_seeded_and_order_free():
    cfg = load_config("demo-phantom", {"data.params.n_per_class": 50})
    train = build_manifest(cfg.data).select("train")
    keep = labelled_mask(train, 0.2, seed=3)
    labels = train.frame["label"].to_numpy()
    for cls in (0, 1):
        assert keep[labels == cls].sum() == int(np.ceil(0.2 * (labels == cls).sum()))
    assert np.array_equal(keep, labelled_mask(train, 0.2, seed=3))
    assert not np.array_equal(keep, labelled_mask(train, 0.2, seed=4))
    shuffled = type(train)(train.frame.iloc[::-1].reset_index(drop=True), train.class_names, train.name)
    kept_ids = set(train.frame["id"][keep])
    assert set(shuffled.frame["id"][labelled_mask(shuffled, 0.2, seed=3)]) == kept_ids
    assert labelled_mask(train, 1.0, seed=0).all()
    with pytest.raises(ConfigError, match="label_fraction"):
        MediffusionOptions(label_fraction=0.0)


def test_joint_loss_ignores_unlabelled_images():
    torch.manual_seed(0)
    model_cfg = load_config(PRESET, {"model.params": TINY_UNET}).model
    model = build_mediffusion_model(model_cfg, DiffusionConfig(wavelet=True), MediffusionOptions(head_hidden=16),
                                    ("a", "b"), 16, 1)
    x = torch.randn(6, 4, 8, 8)
    labels = torch.tensor([0, -1, 1, -1, -1, 0])
    out = joint_loss(model.denoiser, x, labels, model.schedule, model.diffusion, model.options,
                     torch.Generator().manual_seed(1))
    assert out["labelled"].item() == 3 and out["loss_ce"] > 0 and out["loss_diffusion"] > 0
    assert torch.isclose(out["loss"], out["loss_diffusion"] + out["loss_ce"])
    none = joint_loss(model.denoiser, x, torch.full((6,), -1), model.schedule, model.diffusion, model.options,
                      torch.Generator().manual_seed(1))
    assert none["loss_ce"].item() == 0 and torch.isnan(none["accuracy"])
    none["loss"].backward()  # the head stays in the graph with zero gradient
    assert all(p.grad is not None and not p.grad.abs().sum() for p in model.denoiser.head.parameters())


def test_tiny_joint_model_overfits_and_reloads_identically(phantom_run):
    cfg, bundle = phantom_run
    meta = json.loads((bundle / "metadata.json").read_text())
    assert meta["kind"] == "mediffusion" and meta["method_options"]["label_fraction"] == 1.0
    assert meta["labelled_images"] == 12 and meta["config"]["method"] == "mediffusion"
    assert meta["parameters"] > 0  # the report's parameter column, for a method it cannot rebuild from the metadata
    rows = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    ce = [r["loss_ce"] for r in rows]
    assert ce[-1] < 0.1 * ce[0] and all(r["labelled"] == 12 for r in rows)
    assert (cfg.run_dir / "loss.png").stat().st_size > 1000

    predictor = load_predictor(bundle, cfg.score)
    assert isinstance(predictor, MediffusionPredictor)
    manifest = build_manifest(cfg.data).select("train").frame.to_dict("records")
    out = predictor.predict_rows(manifest)
    assert [r[S.PRED] for r in out] == [r[S.LABEL] for r in out]  # the head separates the training phantoms
    table = S.to_table(out)
    assert table.num_rows == 12 and set(table.column(S.METHOD).to_pylist()) == {"mediffusion"}
    assert set(table.column(S.NFE).to_pylist()) == {1} and table.column(S.VOTES).null_count == 12
    prob = np.array([r[S.PROB] for r in out])
    assert np.allclose(prob.sum(axis=1), 1, atol=1e-6)
    entropy = -(prob * np.log(np.clip(prob, 1e-12, None))).sum(axis=1) / np.log(2)
    assert np.allclose([r[S.UNCERTAINTY] for r in out], entropy, atol=1e-5)

    again = MediffusionPredictor.from_checkpoint(bundle, cfg.score).predict_rows(manifest)
    assert [r[S.PROB] for r in again] == [r[S.PROB] for r in out]


def test_classifier_guidance_moves_images_toward_the_target(phantom_run):
    cfg, bundle = phantom_run
    model = load_mediffusion_model(bundle)
    frame = build_manifest(cfg.data).select("train").frame.iloc[[0, 1, 2, 6, 7, 8]]  # 3 of each class
    pixels = torch.stack([predictor_decoder(model).decode_row(r) for r in frame.to_dict("records")])
    ids = list(frame["id"])
    labels = torch.tensor(frame["label"].to_numpy())
    n = len(ids)
    plain = ClassifierGuidedSampler(t_start=0.5, steps=6, scale=0.0, seed=1)(model, pixels, ids)
    guided = ClassifierGuidedSampler(t_start=0.5, steps=6, scale=100.0, seed=1)(model, pixels, ids)
    assert guided.reconstructions.shape == (n, 2, 1, 16, 16) and guided.classes == (0, 1)
    assert guided.reconstructions.abs().max() <= 1.0 + 1e-5
    with torch.no_grad():
        def target_prob(result):  # head probability of class k on the reconstruction toward class k, [B, K]
            flat = result.reconstructions.flatten(0, 1)
            p = torch.softmax(model.head_logits(flat), dim=-1).reshape(n, 2, 2)
            return torch.diagonal(p, dim1=1, dim2=2)

        p_plain, p_guided = target_prob(plain), target_prob(guided)
    other = 1 - labels  # the counterfactual class of each image
    counter_plain = p_plain[torch.arange(n), other]
    counter_guided = p_guided[torch.arange(n), other]
    assert counter_guided.mean() > counter_plain.mean() + 0.3
    assert (counter_guided > counter_plain + 0.5).sum() >= n // 2
    # same seed, same result whatever the batch; t_start = 0 returns the input
    one = ClassifierGuidedSampler(t_start=0.5, steps=6, scale=100.0, seed=1, max_batch=1)(model, pixels[4:5], ids[4:5])
    assert torch.allclose(one.reconstructions[0], guided.reconstructions[4], atol=1e-5)
    still = ClassifierGuidedSampler(t_start=0.0, steps=4, scale=5.0)(model, pixels[:2], ids[:2], classes=[1])
    assert torch.allclose(still.reconstructions[:, 0], pixels[:2], atol=1e-5)


def predictor_decoder(model):
    from meddiff.data import ImageDecoder

    return ImageDecoder(model.image_size, model.channels)


def test_cli_train_resume_and_score_on_pneumoniamnist(tmp_path, pneumonia_npz, capsys):
    sets = {"output_dir": str(tmp_path), "name": "md", "data.params.path": str(pneumonia_npz),
            "model.params": TINY_UNET, "train.batch_size": 16, "train.warmup_steps": 2, "train.num_threads": 1,
            "train.log_every": 2, "train.checkpoint_every": 2, "ray.num_workers": 0}
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    assert main(["train", "--config", PRESET, *args, "--set", "train.steps=2"]) == 0
    out = capsys.readouterr().out
    assert "keep their label (label_fraction 0.2" in out and "step_0000002" in out and "val accuracy" in out
    assert main(["train", "--config", PRESET, *args, "--set", "train.steps=4"]) == 0
    assert "resuming md from step_0000002 (step 2/4)" in capsys.readouterr().out
    # resuming continues exactly where an uninterrupted run would be
    straight = train_mediffusion(load_config(PRESET, {**sets, "name": "straight", "train.steps": 4}))
    a = load_mediffusion_model(tmp_path / "md").denoiser.state_dict()
    b = load_mediffusion_model(straight).denoiser.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    res = tmp_path / "res"
    assert main(["score", "--checkpoint", str(tmp_path / "md"), "--out", str(res), "--limit", "24"]) == 0
    df = read_results(res)
    assert len(df) == 24 and (df[S.STATUS] == "ok").all() and (df[S.METHOD] == "mediffusion").all()
    assert (df[S.NFE] == 1).all() and df[S.PRED_VOTE].isna().all() and df[S.N_DRAWS].isna().all()


def test_meddiff_explain_runs_classifier_guidance_through_the_registry(phantom_run, tmp_path, capsys):
    """`meddiff explain` on a Mediffusion checkpoint: the registry's counterfactual entry (classifier guidance) makes
    the index, PNGs and gallery; the guided reconstructions equal the sampler's own, and the counterfactual toward
    the other class moves the head's probability toward it."""
    cfg, bundle = phantom_run
    frame = build_manifest(cfg.data).frame
    ids = [str(frame[frame["label"] == c]["id"].iloc[0]) for c in (0, 1)]  # one image of each class
    results = tmp_path / "results"
    assert main(["score", "--checkpoint", str(bundle), "--out", str(results), "--split", "train"]) == 0
    out = tmp_path / "explain"
    assert main(["explain", "--checkpoint", str(bundle), "--results", str(results), "--out", str(out),
                 "--select", "ids:" + ",".join(ids), "--t-start", "0.5", "--steps", "6", "--guidance", "100",
                 "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "explained 2 image(s)" in printed and "gallery:" in printed
    from meddiff.results.explanations import read_index

    index = read_index(out)
    assert len(index) == 4 and set(index["class"]) == {0, 1} and (index["status"] == "ok").all()
    assert all((out / p).is_file() for p in index["reconstruction_png"])
    model = load_mediffusion_model(bundle)
    rows = frame.set_index("id").loc[ids].reset_index()
    pixels = torch.stack([predictor_decoder(model).decode_row(r) for r in rows.to_dict("records")])
    direct = ClassifierGuidedSampler(t_start=0.5, steps=6, scale=100.0, seed=1)(model, pixels, list(rows["id"]))
    by = index.set_index(["image_id", "class"])["reconstruction_error"]
    got = np.array([[by[(i, c)] for c in (0, 1)] for i in ids])
    assert np.allclose(got, direct.errors.numpy(), rtol=1e-4, atol=1e-6)


def test_explain_refuses_methods_without_counterfactuals(tmp_path):
    from meddiff.errors import CheckpointError
    from meddiff.methods import counterfactual_loader

    with pytest.raises(CheckpointError, match="'didicm' checkpoint and didicm has no counterfactuals: its diffusion "
                                              "runs over the label.*methods with counterfactuals: diffusion, "
                                              "mediffusion"):
        counterfactual_loader("didicm", "run/checkpoints/step_1")
    with pytest.raises(CheckpointError, match="'nope' is not a registered method"):
        counterfactual_loader("nope", "x")
    assert callable(counterfactual_loader("mediffusion", "x"))
