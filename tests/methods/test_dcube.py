"""D-Cube-style hyper-features on the session's tiny diffusion model (``tiny_checkpoint``) and real PneumoniaMNIST:
hook feature shapes and seeding, the KS layer selection on synthetic features, the soft-label conditioning of the cycle
loss, the paper's losses, a head overfitting real images, bundle save/load with identical predictions, and
`meddiff train` / resume / `meddiff score` with schema-valid rows."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from meddiff.cli import main
from meddiff.config import ScoreConfig, load_config
from meddiff.data import ImageDecoder, build_manifest
from meddiff.diffusion.model import load_diffusion_model
from meddiff.errors import CheckpointError, ConfigError
from meddiff.methods import METHODS, predictor_class
from meddiff.methods.dcube.features import (FeatureSpec, candidate_layers, denoiser_inputs, eps_prediction,
                                            extract_split, image_features, mid_layer, pooled_features)
from meddiff.methods.dcube.head import DCubeHead
from meddiff.methods.dcube.loop import train_dcube
from meddiff.methods.dcube.losses import consistency_loss, contrastive_loss, cycle_loss, paired
from meddiff.methods.dcube.model import DCubeModel, load_dcube_model, metadata_fields
from meddiff.methods.dcube.predictor import DCubePredictor
from meddiff.methods.dcube.selection import LayerKS, layer_gaussianity, rank_layers, select_layers
from meddiff.results import schema as S
from meddiff.methods import load_predictor
from meddiff.results.store import read_results
from meddiff.bundle import save_bundle

PRESET = "dcube-pneumonia"
REPO = Path(__file__).resolve().parents[2]
BLOCKS = ["down.0", "down.1", "mid", "up.0", "up.1"]
TINY_DIMS = {"down.0": 16, "down.1": 32, "mid": 32, "up.0": 32, "up.1": 16}  # conftest TINY_MODEL: channels (16, 32)


@pytest.fixture(autouse=True)
def _one_thread(_small_threads):
    # after conftest's two threads: on this shared 2-core machine two threads wait on each other (16x slower measured
    # for the head's small tensors)
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="module")
def frozen(tiny_checkpoint):
    return load_diffusion_model(tiny_checkpoint)


def _small_npz(src, dst, per_class=(12, 4, 6)):
    """A few real PneumoniaMNIST images per split and class (a pneumoniamnist* file name keeps the class names)."""
    data = np.load(src)
    out = {}
    for split, k in zip(("train", "val", "test"), per_class):
        labels = data[f"{split}_labels"].reshape(-1)
        idx = np.concatenate([np.flatnonzero(labels == c)[:k] for c in (0, 1)])
        out[f"{split}_images"] = data[f"{split}_images"][idx]
        out[f"{split}_labels"] = data[f"{split}_labels"][idx]
    np.savez(dst, **out)
    return dst


def _pixels(npz, split="train", n=8):
    manifest = build_manifest(load_config(PRESET, {"data.params.path": str(npz)}).data).select(split)
    frame = manifest.frame.iloc[:n]
    images, errors = ImageDecoder(28, 1).decode_batch(frame.to_dict("records"))
    assert not any(errors)
    return images, [str(i) for i in frame["id"]], torch.tensor(frame["label"].to_numpy())


def test_registered_without_votes():
    assert METHODS["dcube"].votes is False
    assert predictor_class("dcube") is DCubePredictor


def test_hook_feature_shapes_and_seeding(frozen, pneumonia_npz):
    blocks = candidate_layers(frozen.denoiser, "block")
    assert list(blocks) == BLOCKS and mid_layer(list(blocks)) == "mid"
    pixels, ids, _ = _pixels(pneumonia_npz, n=6)
    spec = FeatureSpec(t=0.1)
    feats = image_features(frozen, blocks, spec, pixels, ids, seed=0)
    assert {n: tuple(f.shape) for n, f in feats.items()} == {n: (6, d) for n, d in TINY_DIMS.items()}

    # the hooked mid-block feature is the spatial mean of the mid block's output, under the null class
    z, time, _, _ = denoiser_inputs(frozen, pixels, ids, 0, 0.1)
    grabbed = {}
    h = frozen.denoiser.net.mid_block.register_forward_hook(lambda _m, _i, out: grabbed.update(mid=out))
    with torch.no_grad():
        frozen.denoiser(z, time, torch.full((6,), frozen.num_classes))
    h.remove()
    assert torch.allclose(feats["mid"], grabbed["mid"].mean(dim=(2, 3)), atol=1e-6)

    # noise is seeded by (seed, image id): batch composition does not matter, the seed and the image do
    alone = image_features(frozen, blocks, spec, pixels[2:3], ids[2:3], seed=0)
    assert torch.allclose(alone["up.1"][0], feats["up.1"][2], atol=1e-5)
    assert not torch.allclose(image_features(frozen, blocks, spec, pixels, ids, seed=1)["up.1"], feats["up.1"])
    clean = image_features(frozen, blocks, FeatureSpec(t=0.1, input="clean"), pixels, ids, seed=0)
    assert torch.equal(clean["up.1"], image_features(frozen, blocks, FeatureSpec(t=0.1, input="clean"), pixels, ids,
                                                     seed=1)["up.1"])

    # per-class features: one pass per class, side by side; mean_std doubles the width
    per_class = image_features(frozen, blocks, FeatureSpec(t=0.1, conditioning="per_class"), pixels, ids, 0)
    assert per_class["mid"].shape == (6, 2 * TINY_DIMS["mid"]) and spec.passes_per_image(2) == 1
    assert FeatureSpec(t=0.1, conditioning="per_class").passes_per_image(2) == 2
    assert image_features(frozen, blocks, FeatureSpec(t=0.1, pool="mean_std"), pixels, ids, 0)["down.0"].shape == (6, 32)

    # layer granularity: the sub-layers in the order they run, ending with the last up-block ResNet
    layers = candidate_layers(frozen.denoiser, "layer")
    names = list(layers)
    assert names[0] == "down.0.resnets.0" and "mid.attentions.0" in names and names[-1] == "up.1.resnets.1"
    assert names.index("mid.resnets.0") < names.index("mid.attentions.0") < names.index("mid.resnets.1")
    assert mid_layer(names) == "mid.resnets.1"
    assert all(f.shape[0] == 6 for f in pooled_features(frozen, layers, z, time).values())


def test_ks_selection_tells_gaussian_from_non_gaussian_layers():
    rng = np.random.default_rng(0)
    n = 256
    layers = {
        "gauss": rng.normal(3.0, 2.0, size=(n, 16)),
        "skewed": rng.exponential(1.0, size=(n, 16)),
        "bimodal": np.concatenate([rng.normal(-3, 0.5, (n // 2, 16)), rng.normal(3, 0.5, (n // 2, 16))]),
        "gauss2": rng.normal(0.0, 1.0, size=(n, 8)),
    }
    ks = {name: layer_gaussianity(f) for name, f in layers.items()}
    assert ks["gauss"].pvalue > 0.05 and ks["gauss2"].pvalue > 0.05
    assert ks["skewed"].pvalue < 1e-3 and ks["bimodal"].pvalue < 1e-3
    assert max(ks["gauss"].statistic, ks["gauss2"].statistic) < min(ks["skewed"].statistic, ks["bimodal"].statistic)
    # the paper keeps the non-Gaussian (semantic) layers; the opposite rule keeps the Gaussian ones; order is kept
    assert select_layers(ks, "non_gaussian") == ["skewed", "bimodal"]
    assert select_layers(ks, "gaussian") == ["gauss", "gauss2"]
    assert select_layers(ks, "all") == list(layers)
    assert rank_layers(ks, "non_gaussian")[0] == "bimodal"  # the larger KS distance
    assert select_layers(ks, "non_gaussian", top_k=1) == ["bimodal"]
    assert set(select_layers(ks, "gaussian", top_k=1)) <= {"gauss", "gauss2"}
    # when no layer passes the threshold, the best-ranked ones fill up to min_layers
    gaussian_only = {k: ks[k] for k in ("gauss", "gauss2")}
    assert select_layers(gaussian_only, "non_gaussian", min_layers=1) == [rank_layers(gaussian_only, "non_gaussian")[0]]
    assert select_layers(gaussian_only, "non_gaussian", min_layers=5) == ["gauss", "gauss2"]
    # a constant layer is not Gaussian; too few images is an error
    assert layer_gaussianity(np.ones((32, 4))) == LayerKS(1.0, 0.0, 0)
    with pytest.raises(ValueError, match="n >= 8"):
        layer_gaussianity(rng.normal(size=(4, 3)))
    with pytest.raises(ValueError, match="mode"):
        select_layers(ks, "most_gaussian")


def test_soft_labels_condition_like_hard_labels_and_carry_gradients(frozen, pneumonia_npz):
    pixels, ids, labels = _pixels(pneumonia_npz, n=4)
    z, time, alpha, sigma = denoiser_inputs(frozen, pixels, ids, 0, 0.3)
    with torch.no_grad():
        hard = eps_prediction(frozen, z, time, alpha, sigma, labels=labels)
        one_hot = eps_prediction(frozen, z, time, alpha, sigma, probs=torch.nn.functional.one_hot(labels, 2).float())
    assert torch.allclose(hard, one_hot, atol=1e-5)
    logits = torch.zeros(4, 2, requires_grad=True)
    soft = eps_prediction(frozen, z, time, alpha, sigma, probs=torch.softmax(logits, dim=1))
    cycle_loss(soft, hard).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert all(p.grad is None for p in frozen.denoiser.parameters())  # the diffusion model stays frozen


def test_losses_follow_the_paper_equations():
    a = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[3.0, 4.0], [1.0, 0.05]])
    # same class: distance (5, 0.05); different class: hinge max(margin - d, 0)
    assert torch.isclose(contrastive_loss(a, b, torch.tensor([0, 0]), margin=0.1), torch.tensor((5.0 + 0.05) / 2))
    assert torch.isclose(contrastive_loss(a, b, torch.tensor([1, 1]), margin=0.1), torch.tensor((0.0 + 0.05) / 2))
    f1, f2, different = paired(a, torch.tensor([0, 1]))
    assert torch.equal(f2, a.flip(0)) and different.tolist() == [1, 1]
    assert torch.isclose(consistency_loss(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]])), torch.tensor(5.0))
    assert cycle_loss(torch.ones(2, 3), torch.ones(2, 3)) == 0


def test_head_overfits_real_pneumonia_images(frozen, pneumonia_npz):
    manifest = build_manifest(load_config(PRESET, {"data.params.path": str(pneumonia_npz)}).data).select("train")
    frame = manifest.frame.groupby("label").head(12).reset_index(drop=True)
    small = type(manifest)(frame, manifest.class_names, manifest.name)
    blocks = candidate_layers(frozen.denoiser, "block")
    feats = extract_split(frozen, small, ImageDecoder(28, 1), blocks, FeatureSpec(t=0.1), 0, torch.device("cpu"),
                          batch_size=12, flips=True)
    assert len(feats) == 24 and feats.flipped["mid"].shape == (24, 32) and feats.inputs is None
    x = torch.cat([feats.features[n] for n in BLOCKS], dim=1)
    torch.manual_seed(0)
    head = DCubeHead(BLOCKS, [TINY_DIMS[n] for n in BLOCKS], 2, hidden=64, dropout=0.0)
    head.set_standardisation(x)
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(head(x), feats.labels)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 < first
    assert (head.eval()(x).argmax(dim=1) == feats.labels).all()


def test_bundle_save_load_gives_identical_predictions(frozen, tiny_checkpoint, pneumonia_npz, tmp_path):
    pixels, ids, _ = _pixels(pneumonia_npz, split="test", n=8)
    spec = FeatureSpec(t=0.2, layers=("down.1", "up.1"))
    torch.manual_seed(1)
    head = DCubeHead(spec.layers, [32, 16], 2, hidden=32)
    model = DCubeModel(frozen, spec, head)
    head.set_standardisation(model.features(pixels, ids, 0) + 0.1)
    before = model.logits(pixels, ids, seed=0)
    bundle = save_bundle(tmp_path / "ck", 7, head, metadata_fields(frozen, tiny_checkpoint, spec, head, {}))
    meta = json.loads((bundle / "metadata.json").read_text())
    assert meta["kind"] == "dcube" and meta["model_id"].startswith("dcube-head-")
    assert meta["dcube"]["diffusion_model_id"] == frozen.model_id and meta["dcube"]["layers"] == ["down.1", "up.1"]
    loaded = load_dcube_model(bundle)
    assert torch.equal(loaded.logits(pixels, ids, seed=0), before)
    predictor = load_predictor(bundle, ScoreConfig(seed=0, batch_size=3))
    assert isinstance(predictor, DCubePredictor)
    rows = predictor.predict_pixels(pixels, ids)
    assert [r[S.PRED] for r in rows] == before.argmax(dim=1).tolist()
    assert np.allclose([r[S.PROB] for r in rows], torch.softmax(before, 1).numpy(), atol=1e-6)

    # a frozen model whose weights changed since training is refused
    moved = tmp_path / "frozen-copy"
    shutil.copytree(tiny_checkpoint, moved)
    m = json.loads((moved / "metadata.json").read_text())
    m["model_id"] = "unet-000000000000"
    (moved / "metadata.json").write_text(json.dumps(m))
    meta["dcube"]["diffusion_checkpoint"] = str(moved)
    (bundle / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="retrain the D-Cube head"):
        load_dcube_model(bundle)


def _set(overrides):
    return [arg for key, value in overrides.items() for arg in ("--set", f"{key}={json.dumps(value)}")]


def test_train_resume_and_score_rows(tiny_checkpoint, pneumonia_npz, tmp_path, capsys):
    npz = _small_npz(pneumonia_npz, tmp_path / "pneumoniamnist_small.npz")
    base = {"output_dir": str(tmp_path), "data.params.path": str(npz), "train.batch_size": 16,
            "train.checkpoint_every": 10, "train.log_every": 5, "train.warmup_steps": 2, "train.ema_warmup": 5,
            "method_options.diffusion_checkpoint": str(tiny_checkpoint), "method_options.ks_images": 16,
            "method_options.extract_batch": 16, "method_options.hidden": 32, "method_options.consistency_weight": 0.1,
            "method_options.contrastive_weight": 0.1, "method_options.cycle_weight": 1.0,
            "method_options.cycle_batch": 4}
    assert main(["train", "--config", PRESET, *_set({**base, "name": "dc", "train.steps": 10})]) == 0
    out = capsys.readouterr().out
    assert "KS Gaussianity on 16 training images" in out and "* " in out and "cycle" in out and "contrastive" in out
    assert "[train] step 10: val accuracy" in out and "checkpoint:" in out
    run = tmp_path / "dc"
    bundle = run / "checkpoints" / "step_0000010"
    meta = json.loads((bundle / "metadata.json").read_text())
    d = meta["dcube"]
    assert meta["kind"] == "dcube" and meta["class_names"] == ["normal", "pneumonia"] and meta["image_size"] == 28
    assert d["diffusion_model_id"] == load_diffusion_model(tiny_checkpoint).model_id and d["t"] == 0.1
    assert d["nfe"] == 1 and set(d["layers"]) <= set(BLOCKS) and "mid" in d["layers"]  # contrastive needs mid
    assert d["layer_dims"] == [TINY_DIMS[n] for n in d["layers"]]
    assert set(d["selection"]["candidates"]) == set(BLOCKS) and meta["train_images"] == 24 and meta["val_images"] == 8
    assert 0 <= meta["val_accuracy"] <= 1
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [5, 10]
    assert all(k in train_rows[0] for k in ("ce", "cycle", "consistency", "contrastive", "accuracy"))
    assert (run / "loss.png").stat().st_size > 1000

    # resuming continues from step 10 and ends with exactly the weights of an uninterrupted 15-step run
    assert main(["train", "--config", PRESET, *_set({**base, "name": "dc", "train.steps": 15})]) == 0
    assert "resuming dc from step_0000010 (step 10/15)" in capsys.readouterr().out
    assert main(["train", "--config", PRESET, *_set({**base, "name": "straight", "train.steps": 15})]) == 0
    from safetensors.torch import load_file
    resumed = load_file(str(run / "checkpoints/step_0000015/model.safetensors"))
    clean = load_file(str(tmp_path / "straight/checkpoints/step_0000015/model.safetensors"))
    assert resumed.keys() == clean.keys() and all(torch.equal(resumed[k], clean[k]) for k in clean)

    # `meddiff score` picks the D-Cube predictor from the bundle's kind; rows follow the schema
    res = tmp_path / "res"
    assert main(["score", "--checkpoint", str(run), "--out", str(res), "--json", str(tmp_path / "s.json")]) == 0
    df = read_results(res)  # schema-checked
    assert len(df) == 12 and (df[S.STATUS] == "ok").all() and set(df[S.SPLIT]) == {"test"}
    assert (df[S.METHOD] == "dcube").all() and (df[S.NFE] == 1).all()
    for col in (S.N_DRAWS, S.VOTES, S.PRED_VOTE, S.PRED_AVERAGE, S.MEAN_ERROR, S.RULE, S.DRAW_ERRORS):
        assert df[col].isna().all(), col
    prob = np.stack(df[S.PROB].to_numpy())
    assert prob.shape == (12, 2) and np.allclose(prob.sum(axis=1), 1, atol=1e-6)
    entropy = -(prob * np.log(np.clip(prob, 1e-12, None))).sum(axis=1) / math.log(2)
    assert np.allclose(df[S.UNCERTAINTY], entropy, atol=1e-5) and (df[S.PRED] == prob.argmax(axis=1)).all()
    final = json.loads((run / "checkpoints/step_0000015/metadata.json").read_text())
    assert (df[S.MODEL_ID] == final["model_id"]).all()
    manifest = build_manifest(load_config(PRESET, {"data.params.path": str(npz)}).data).select("test")
    table = S.to_table(load_predictor(run, ScoreConfig()).predict_rows(manifest.frame.to_dict("records")))
    S.check_table(table)
    assert table.num_rows == 12

    # explicit errors: a missing frozen model names `meddiff demo`; a wrong image size says what to set; a changed
    # feature setting cannot resume the run
    assert main(["train", "--config", PRESET, *_set({**base, "name": "x", "method_options.diffusion_checkpoint": "no"})]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="meddiff demo"):
        train_dcube(load_config(PRESET, {**base, "name": "x", "method_options.diffusion_checkpoint": "no"}))
    with pytest.raises(ConfigError, match="data.image_size=28"):
        train_dcube(load_config(PRESET, {**base, "name": "x", "data.image_size": 32}))
    with pytest.raises(CheckpointError, match="different D-Cube settings"):
        train_dcube(load_config(PRESET, {**base, "name": "dc", "train.steps": 20, "method_options.t": 0.3}))
    with pytest.raises(CheckpointError, match="different D-Cube settings.*method_options"):
        train_dcube(load_config(PRESET, {**base, "name": "dc", "train.steps": 20, "method_options.flip": True}))


def test_options_are_checked():
    from meddiff.methods.dcube.options import parse_options

    with pytest.raises(ConfigError, match="method_options.selection"):
        parse_options(load_config(PRESET, {"method_options.selection": "gaussianest"}))
    with pytest.raises(ConfigError, match="unknown key"):
        parse_options(load_config(PRESET, {"method_options.tt": 0.1}))
    with pytest.raises(ConfigError, match="meddiff demo"):
        parse_options(load_config(PRESET, {"method_options.diffusion_checkpoint": ""}))
    a100 = parse_options(load_config(REPO / "jobs/configs/chexpert-dcube-a100.yaml"))
    assert a100.diffusion_checkpoint == "chexpert-unet-paper" and a100.consistency_weight == 0.1
    with pytest.raises(ConfigError, match="hidden > 0"):
        parse_options(load_config(PRESET, {"method_options.hidden": 0, "method_options.contrastive_weight": 1.0}))
