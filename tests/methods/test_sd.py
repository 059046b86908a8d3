"""Fine-tuned Stable Diffusion classifier (method sd): the offline tiny pipeline and its shapes, the engine adapter,
a tiny fine-tune whose loss drops on a handful of real PneumoniaMNIST images, bundle save/load with identical
predictions (also after the tiny folder is rebuilt from its seed), schema-valid vote rows, exact early exit = full-N
vote, the command line picking the predictor from the bundle's kind, and counterfactuals by SDEdit with
classifier-free guidance (sampler and ``meddiff explain`` end to end)."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from meddiff.cli import main
from meddiff.config import ExplainConfig, ScoreConfig, load_config
from meddiff.data import ImageDecoder, build_manifest
from meddiff.diffusion.engine import EngineSpec, pair_errors
from meddiff.diffusion.noise import pair_noise
from meddiff.diffusion.vparam import eps_from_v
from meddiff.errors import CheckpointError, ConfigError
from meddiff.methods import METHODS, predictor_class
from meddiff.methods.sd.model import SDOptions, build_sd_model, sd_options
from meddiff.methods.sd.predictor import SDPredictor
from meddiff.methods.sd.tiny import build_tiny_pipeline
from meddiff.methods.sd.train import train_sd
from meddiff.methods.sd.engine import DiscreteLogSNR, PromptUNetDenoiser
from meddiff.methods.sd.model import class_prompts, resolve_pretrained
from meddiff.results import schema as S
from meddiff.methods import load_predictor
from meddiff.results.store import read_results
from meddiff.bundle import save_bundle
from tests.agreement import near_tied

PRESET = "sd-pneumonia"
CLASSES = ("normal", "pneumonia")
SCORE = ScoreConfig(n_draws=15, batch_size=4, chunk_draws=1, seed=3, num_threads=1, store_draws=True)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return build_tiny_pipeline(tmp_path_factory.mktemp("sd") / "tiny", seed=0)


@pytest.fixture(scope="module")
def handful_npz(tmp_path_factory):
    """8 real PneumoniaMNIST training images (4 per class) as train, 4 more each as val and test."""
    from tests.conftest import require_data

    src = np.load(require_data("pneumoniamnist_balanced/pneumoniamnist_balanced.npz"))
    labels = src["train_labels"].reshape(-1)
    pick = np.concatenate([np.flatnonzero(labels == c)[:8] for c in (0, 1)])
    train, rest = np.concatenate([pick[:4], pick[8:12]]), np.concatenate([pick[4:8], pick[12:16]])
    path = tmp_path_factory.mktemp("handful") / "pneumoniamnist_handful.npz"
    np.savez(path, train_images=src["train_images"][train], train_labels=labels[train],
             val_images=src["train_images"][rest[::2]], val_labels=labels[rest[::2]],
             test_images=src["train_images"][rest], test_labels=labels[rest])
    return path


def tiny_cfg(out, name, folder, npz, **overrides):
    base = {"output_dir": str(out), "name": name, "data.params.path": str(npz),
            "method_options.pretrained": f"tiny:{folder}", "train.num_threads": 1, "train.batch_size": 8,
            "train.warmup_steps": 0, "train.log_every": 10}
    return load_config(PRESET, {**base, **overrides})


@pytest.fixture(scope="module")
def overfit_run(tmp_path_factory, tiny_folder, handful_npz):
    out = tmp_path_factory.mktemp("sd-runs")
    cfg = tiny_cfg(out, "overfit", tiny_folder, handful_npz, **{
        "train.steps": 60, "train.lr": 3e-3, "train.checkpoint_every": 30, "train.ema_warmup": 10})
    return cfg, train_sd(cfg)


def test_registered_with_votes():
    assert METHODS["sd"].votes is True
    assert predictor_class("sd") is SDPredictor


def test_tiny_pipeline_is_a_diffusers_folder_built_offline(tiny_folder, tmp_path):
    from transformers import CLIPTokenizer

    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (tiny_folder / sub).is_dir(), sub
    index = json.loads((tiny_folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline" and index["tokenizer"][1] == "CLIPTokenizer"
    assert (tiny_folder / "tokenizer" / "vocab.json").is_file() and (tiny_folder / "tokenizer" / "merges.txt").is_file()
    tok = CLIPTokenizer.from_pretrained(tiny_folder, subfolder="tokenizer")
    ids = tok("a cat").input_ids
    assert len(ids) == 2 + 4 and ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id  # a</w> c a t</w>
    assert build_tiny_pipeline(tiny_folder, seed=0) == tiny_folder  # kept as it is
    with pytest.raises(ConfigError, match="seed 0.*seed 1 .*tiny_seed: 0"):
        build_tiny_pipeline(tiny_folder, seed=1)
    (tmp_path / "plain").mkdir()
    with pytest.raises(ConfigError, match="not a tiny pipeline"):
        build_tiny_pipeline(tmp_path / "plain")


def test_shapes_prompts_and_engine_adapter(tiny_folder):
    opts = SDOptions(pretrained=f"tiny:{tiny_folder}",
                     prompts={"pneumonia": "a chest x-ray of a patient with pneumonia"})
    model, scheduler = build_sd_model(opts, CLASSES, 32, 1)
    assert model.prompts == ("a medical image showing normal", "a chest x-ray of a patient with pneumonia")
    assert model.prompt_embeds.shape == (2, 77, 32) and not torch.equal(model.prompt_embeds[0], model.prompt_embeds[1])
    pixels = torch.rand(3, 1, 32, 32) * 2 - 1
    latents = model.encode(pixels)
    assert latents.shape == (3, 4, 4, 4) == (3, *model.latent_shape)
    assert torch.equal(latents, model.encode(pixels.repeat(1, 3, 1, 1)))  # grayscale is repeated to RGB
    # the calibrated posterior is narrow: a draw is close to the mean
    draw = model.encode(pixels, "sample", torch.Generator().manual_seed(0))
    assert (draw - latents).abs().max() < 0.1 < latents.std()

    timesteps = torch.tensor([0, 500, 999])
    eps = model.unet(latents, timesteps, encoder_hidden_states=model.prompt_embeds[[0, 1, 0]]).sample
    assert eps.shape == latents.shape

    # t -> timestep floor(t T); alpha^2 = abar_k, so the engine's z is DDPM's add_noise
    schedule = model.schedule
    t = torch.tensor([0.0, 0.5004, 0.9999, 1.0])
    assert schedule.timestep(t).tolist() == [0, 500, 999, 999]
    abar = scheduler.alphas_cumprod[schedule.timestep(t)]
    assert torch.allclose(torch.sigmoid(schedule.logsnr(t)).double(), abar.double(), rtol=1e-5)
    assert schedule.timestep_of_logsnr(schedule.logsnr(t)).tolist() == [0, 500, 999, 999]
    with pytest.raises(ValueError, match="strictly decreasing"):
        DiscreteLogSNR(torch.tensor([0.5, 0.9]))

    # the adapter's v_hat gives back the UNet's eps exactly as the engine computes eps_hat
    den = PromptUNetDenoiser(model.unet, model.prompt_embeds, schedule).eval()
    logsnr = schedule.logsnr(torch.tensor([0.0, 0.5004, 0.9999]))
    alpha, sigma = torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()
    with torch.no_grad():
        v_hat = den(latents, logsnr, torch.tensor([0, 1, 0]))
        direct = model.unet(latents, timesteps, encoder_hidden_states=model.prompt_embeds[[0, 1, 0]]).sample
    assert torch.allclose(eps_from_v(latents, v_hat, alpha, sigma), direct, atol=1e-4)

    # one engine draw by hand: the error of class c is the MSE of the UNet's eps under prompt c at DDPM's z_k
    x = model.encode(ImageDecoder(32, 1).decode_bytes(_png_bytes())[None])
    with torch.no_grad():
        errors, t_draw = pair_errors(den, x, [7], [0], EngineSpec(num_classes=2, schedule=schedule, time_kind="logsnr"))
        t_ref, noise = pair_noise([7], [0], tuple(x.shape[1:]))
        k = schedule.timestep(t_ref)
        z = scheduler.add_noise(x, noise, k)
        ref = [(model.unet(z, k, encoder_hidden_states=model.prompt_embeds[[c]]).sample - noise).pow(2).mean()
               for c in range(2)]
    assert torch.equal(t_draw, t_ref) and torch.allclose(errors[0], torch.stack(ref), rtol=1e-4)

    # prompts: unknown class names and prompts equal after tokenisation are errors
    with pytest.raises(ConfigError, match=r"\['pneumonai'\] are not class names"):
        class_prompts(CLASSES, SDOptions(pretrained="unused", prompts={"pneumonai": "x"}))
    same = "x" * 80
    with pytest.raises(ConfigError, match="same after tokenisation"):
        build_sd_model(SDOptions(pretrained=f"tiny:{tiny_folder}",
                                 prompts={"normal": same + "a", "pneumonia": same + "b"}), CLASSES, 32, 1)
    with pytest.raises(ConfigError, match="does not exist"):
        build_sd_model(SDOptions(pretrained=str(tiny_folder.parent / "missing")), CLASSES, 32, 1)
    with pytest.raises(ConfigError, match="only .*MEDDIFF_MODELS"):
        resolve_pretrained("${HOME}/sd")
    with pytest.raises(ConfigError, match="pretrained"):
        sd_options({"prompts": {}})  # no silent default model


def test_fine_tune_loss_drops_on_a_handful_of_real_images(overfit_run):
    cfg, bundle = overfit_run
    run = bundle.parent.parent
    losses = [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == 6 and losses[-1] < 0.6 * losses[0]
    meta = json.loads((bundle / "metadata.json").read_text())
    assert meta["kind"] == "sd" and meta["model_id"].startswith("sd-") and meta["class_names"] == list(CLASSES)
    assert meta["prompts"] == ["a chest x-ray of a healthy patient", "a chest x-ray of a patient with pneumonia"]
    assert meta["pretrained"].startswith("tiny:") and meta["latent_shape"] == [4, 4, 4]
    assert meta["frozen_sha256"] and meta["unet_config"]["cross_attention_dim"] == 32
    assert meta["scheduler_config"]["num_train_timesteps"] == 1000 and meta["prediction_type"] == "epsilon"
    assert (run / "loss.png").is_file()

    # resuming the run with other prompts is refused
    with pytest.raises(CheckpointError, match="method_options"):
        train_sd(tiny_cfg(run.parent, "overfit", cfg.method_options["pretrained"][5:], cfg.data.params["path"],
                          **{"train.steps": 70, "method_options.prompts.normal": "a normal chest"}))


def test_bundle_reload_gives_identical_predictions(tiny_folder, handful_npz, tmp_path):
    cfg = tiny_cfg(tmp_path, "reload", tiny_folder, handful_npz)
    model, _ = build_sd_model(SDOptions(pretrained=f"tiny:{tiny_folder}"), CLASSES, 32, 1)
    with torch.no_grad():  # move away from the pretrained weights, as fine-tuning would
        for p in model.unet.parameters():
            p.add_(0.01 * torch.randn_like(p))
    bundle = save_bundle(tmp_path / "ckpt", 1, model.unet, model.metadata_fields())
    rows = build_manifest(cfg.data).select("test").frame.to_dict("records")
    torch.set_num_threads(SCORE.num_threads)  # as load_predictor does: float sums depend on the thread count
    before = SDPredictor(model, SCORE).predict_rows(rows)
    after = load_predictor(bundle, SCORE)
    assert isinstance(after, SDPredictor) and after.model_id.startswith("sd-")
    reloaded = after.predict_rows(rows)
    keys = (S.PRED_VOTE, S.PRED_AVERAGE, S.VOTES, S.MEAN_ERROR, S.DRAW_ERRORS, S.DRAW_T, S.N_DRAWS)
    assert [[r[k] for k in keys] for r in before] == [[r[k] for k in keys] for r in reloaded]

    # a missing tiny folder is rebuilt from its seed and passes the fingerprint check; a changed one does not
    moved = tmp_path / "tiny-copy"
    shutil.copytree(tiny_folder, moved)
    meta_path = bundle / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["pretrained"] = f"tiny:{tmp_path / 'rebuilt'}"
    meta_path.write_text(json.dumps(meta))
    assert [r[S.VOTES] for r in load_predictor(bundle, SCORE).predict_rows(rows)] == [r[S.VOTES] for r in before]
    meta["pretrained"] = str(moved)
    meta_path.write_text(json.dumps(meta))
    (moved / "tokenizer" / "merges.txt").write_text("#version: 0.2\na b\n")
    with pytest.raises(CheckpointError, match="differ from the ones this UNet was fine-tuned with"):
        load_predictor(bundle, SCORE)


def test_rows_follow_the_schema_and_exact_early_exit_keeps_the_vote(overfit_run):
    cfg, bundle = overfit_run
    rows = build_manifest(cfg.data).select("test").frame.to_dict("records")
    full = load_predictor(bundle, SCORE).predict_rows(rows)
    table = S.to_table(full)
    assert table.num_rows == 8
    for r in full:
        assert r[S.STATUS] == "ok" and r[S.METHOD] == "sd" and r[S.RULE] == "vote" and r[S.SEED] == 3
        assert r[S.N_DRAWS] == 15 and r[S.NFE] == 30 and sum(r[S.VOTES]) == 15
        assert np.allclose(r[S.PROB], np.array(r[S.VOTES]) / 15) and 0 <= r[S.UNCERTAINTY] <= 1
        errors = np.array(r[S.DRAW_ERRORS])
        assert errors.shape == (2, 15) and r[S.PRED_AVERAGE] == int(errors.mean(1).argmin())
        assert r[S.VOTES] == np.bincount(errors.argmin(0), minlength=2).tolist()
        assert r[S.PRED] == r[S.PRED_VOTE] and r[S.PRED_NAME] == CLASSES[r[S.PRED]]

    # exact early exit: the same votes as the full N on the same seeds, from a prefix of the same draws
    early = load_predictor(bundle, ScoreConfig(**{**SCORE.__dict__, "stopping": "exact"})).predict_rows(rows)
    for e, f in zip(early, full):  # (other batch shapes: a near-tied draw may vote either way, tests/agreement.py)
        assert e[S.PRED_VOTE] == f[S.PRED_VOTE] or near_tied(f[S.DRAW_ERRORS]) > 0
    assert any(r[S.N_DRAWS] < 15 for r in early)
    for e, f in zip(early, full):
        n = e[S.N_DRAWS]
        assert e[S.NFE] == 2 * n and np.allclose(np.array(e[S.DRAW_ERRORS]), np.array(f[S.DRAW_ERRORS])[:, :n])


def test_command_line_scores_an_sd_run(overfit_run, tmp_path, capsys):
    cfg, bundle = overfit_run
    out = tmp_path / "res"
    assert main(["score", "--checkpoint", str(bundle.parent.parent), "--out", str(out), "--n-draws", "5",
                 "--set", "score.num_threads=1"]) == 0
    assert "vote:" in capsys.readouterr().out
    df = read_results(out)
    assert len(df) == 8 and (df[S.METHOD] == "sd").all() and (df[S.NFE] == 10).all()


def _png_bytes() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.arange(32 * 32).reshape(32, 32) % 251).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# --- counterfactuals: SDEdit with classifier-free guidance in latent space (meddiff.methods.sd.counterfactual) ------

CF_CFG = ExplainConfig(t_start=0.5, steps=3, guidance=2.0, seed=0, batch_size=2, shard_size=2, num_threads=2,
                       select="extremes:1")


@pytest.fixture(scope="module")
def sd_counterfactuals(overfit_run):
    from meddiff.methods.sd.counterfactual import load_counterfactuals

    return load_counterfactuals(overfit_run[1], CF_CFG, torch.device("cpu"))


@pytest.fixture(scope="module")
def three_images(overfit_run):
    cfg, _ = overfit_run
    rows = build_manifest(cfg.data).select("test").frame.to_dict("records")[:3]
    images, errors = ImageDecoder(32, 1).decode_batch(rows)
    assert errors == [None] * 3
    return images, [str(r["id"]) for r in rows]


def test_sd_counterfactuals_shapes_determinism_batch_independence_and_t0(sd_counterfactuals, three_images):
    from meddiff.methods.sd.counterfactual import decode_latents, sdedit_timesteps

    cf, (x, ids) = sd_counterfactuals, three_images
    assert METHODS["sd"].counterfactual == "meddiff.methods.sd.counterfactual:load_counterfactuals"
    assert cf.class_names == CLASSES and cf.num_classes == 2 and cf.model.null_embed.shape == (77, 32)
    assert cf.sampler.max_batch == 64  # max(64, 2 x batch_size x classes)
    full = cf(x, ids)
    assert full.inputs.shape == (3, 1, 32, 32) and full.classes == (0, 1)
    assert full.reconstructions.shape == (3, 2, 1, 32, 32) and full.reconstructions.dtype == torch.float32
    assert full.reconstructions.device.type == "cpu" and full.reconstructions.abs().max() <= 1.0
    assert torch.allclose(full.errors, (full.reconstructions - x[:, None]).pow(2).mean(dim=(2, 3, 4)))
    assert torch.equal(cf(x, ids).reconstructions, full.reconstructions)  # same seed: the same images
    other = dataclasses.replace(cf.sampler, seed=1)(cf.model, x, ids)
    assert not torch.allclose(other.reconstructions, full.reconstructions, atol=1e-3)
    for i in range(3):  # the noise of an image depends on (seed, id) only, not on the batch
        one = cf(x[i:i + 1], [ids[i]])
        assert torch.allclose(one.reconstructions[0], full.reconstructions[i], atol=1e-5)

    # t_start = 0: nothing is noised, every class gets the VAE's reconstruction of the input
    zero = dataclasses.replace(cf.sampler, t_start=0.0)(cf.model, x, ids)
    with torch.no_grad():
        vae_rec = decode_latents(cf.model, cf.model.encode(x), 8).mean(dim=1, keepdim=True)
    for k in range(2):
        assert torch.allclose(zero.reconstructions[:, k], vae_rec, atol=1e-5)

    # t_start maps to DDPM's timestep floor(t T) as the predictor's; the steps end at 0, repeats dropped
    schedule = cf.model.schedule
    assert sdedit_timesteps(0.5, 4, schedule).tolist() == [500, 333, 167, 0]
    assert sdedit_timesteps(1.0, 2, schedule).tolist() == [999, 0]
    assert sdedit_timesteps(0.001, 5, schedule).tolist() == [1, 0]
    assert sdedit_timesteps(0.0, 5, schedule).numel() == 0
    with pytest.raises(ConfigError, match="t_start"):
        dataclasses.replace(cf.sampler, t_start=1.5)
    with pytest.raises(ConfigError, match="out of range"):
        cf.sampler(cf.model, x, ids, classes=[2])


def _row_counter(unet):
    rows = []
    handle = unet.register_forward_pre_hook(lambda m, args, kwargs: rows.append(
        (args[0].shape[0], kwargs["encoder_hidden_states"].clone())), with_kwargs=True)
    return rows, handle


def test_sd_counterfactual_guidance_and_no_null_forward_at_w0(sd_counterfactuals, three_images, overfit_run):
    from meddiff.methods.sd.counterfactual import load_counterfactuals

    cf, (x, ids) = sd_counterfactuals, three_images
    rows, handle = _row_counter(cf.model.unet)
    try:
        guided = cf(x[:2], ids[:2])
    finally:
        handle.remove()
    assert sum(n for n, _ in rows) == 3 * 2 * 2 * 2  # steps x images x classes x (class, null)
    null = cf.model.null_embed
    assert sum(int((ctx == null).all(dim=(1, 2)).sum()) for _, ctx in rows) == 3 * 2 * 2  # one null row per row
    # the prompts steer the reconstructions apart
    assert (guided.reconstructions[:, 0] - guided.reconstructions[:, 1]).abs().max() > 1e-3

    plain = load_counterfactuals(overfit_run[1], dataclasses.replace(CF_CFG, guidance=0.0), torch.device("cpu"))
    assert plain.model.null_embed is None  # w = 0: the empty prompt is not even encoded
    rows, handle = _row_counter(plain.model.unet)
    try:
        out = plain(x[:2], ids[:2])
    finally:
        handle.remove()
    assert sum(n for n, _ in rows) == 3 * 2 * 2 and out.reconstructions.shape == (2, 2, 1, 32, 32)
    assert not torch.allclose(out.reconstructions, guided.reconstructions, atol=1e-4)
    with pytest.raises(ConfigError, match="null prompt"):
        dataclasses.replace(plain.sampler, guidance=1.0)(plain.model, x[:1], ids[:1])


class _FakeUNet(torch.nn.Module):
    """A UNet stand-in with a known eps(z, k, context) = 0.3 z + mean(context); with ``v`` it returns the velocity
    alpha eps - sigma x_hat of the same prediction."""

    def __init__(self, abar: torch.Tensor, v: bool = False) -> None:
        super().__init__()
        self.abar, self.v = abar, v

    def forward(self, z, k, encoder_hidden_states):
        eps = 0.3 * z + encoder_hidden_states.mean(dim=(1, 2))[:, None, None, None]
        if not self.v:
            return dataclasses.make_dataclass("Out", ["sample"])(eps)
        a = self.abar[k].float().sqrt()[:, None, None, None]
        s = (1 - self.abar[k]).float().sqrt()[:, None, None, None]
        return dataclasses.make_dataclass("Out", ["sample"])(a * eps - s * (z - s * eps) / a)


def test_sd_counterfactual_tensor_function_shares_noise_and_reads_v_prediction(tiny_folder):
    from diffusers import DDPMScheduler

    from meddiff.methods.sd.counterfactual import guided_eps, sample_sd_counterfactuals, sdedit_timesteps

    abar = DDPMScheduler.from_pretrained(tiny_folder, subfolder="scheduler").alphas_cumprod
    schedule = DiscreteLogSNR(abar)
    x = torch.randn(2, 4, 4, 4)
    steps = sdedit_timesteps(0.6, 5, schedule)
    same = torch.zeros(3, 7, 32)  # three classes with the same prompt: the same start and noise give equal rows
    out = sample_sd_counterfactuals(_FakeUNet(abar), x, [11, 12], same, torch.ones(7, 32), steps, schedule,
                                    "epsilon", 1.5)
    assert out.shape == (2, 3, 4, 4, 4) and torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])
    assert not torch.allclose(out[0, 0], out[1, 0])
    cond = torch.stack([torch.zeros(7, 32), torch.full((7, 32), 0.5)])
    eps_mode = sample_sd_counterfactuals(_FakeUNet(abar), x, [11, 12], cond, torch.ones(7, 32), steps, schedule,
                                         "epsilon", 1.5, max_batch=3)
    v_mode = sample_sd_counterfactuals(_FakeUNet(abar, v=True), x, [11, 12], cond, torch.ones(7, 32), steps, schedule,
                                       "v_prediction", 1.5)
    assert torch.allclose(eps_mode, v_mode, atol=1e-4)
    assert not torch.allclose(eps_mode[:, 0], eps_mode[:, 1])
    assert torch.equal(guided_eps(torch.ones(2), torch.zeros(2), 0.0), torch.ones(2))
    assert torch.allclose(guided_eps(torch.ones(2), torch.zeros(2), 7.5), torch.full((2,), 8.5))
    assert torch.equal(sample_sd_counterfactuals(_FakeUNet(abar), x, [1, 2], cond, None, steps[:0], schedule,
                                                 "epsilon", 0.0), x[:, None].expand(2, 2, 4, 4, 4))


def test_explain_an_sd_run_end_to_end_and_refuse_a_baseline(overfit_run, tmp_path):
    from PIL import Image

    from meddiff.results import explain_schema as X
    from meddiff.explain.job import explain_results, read_index
    from meddiff.scoring.local import score_checkpoint

    cfg, bundle = overfit_run
    results = tmp_path / "res"
    score_checkpoint(bundle, cfg.data, ScoreConfig(n_draws=3, limit=4, shard_size=4, batch_size=4, num_threads=2),
                     results)
    out = tmp_path / "explain"
    run = explain_results(bundle, results, out, CF_CFG)
    assert run["images"] == 2 and run["explained"] == 2 and run["errors"] == 0
    index = read_index(out)
    assert len(index) == 2 * 2 and (index[X.STATUS] == "ok").all()
    assert index.groupby(X.IMAGE_ID)[X.CLASS].apply(sorted).map(list).tolist() == [[0, 1]] * 2
    assert (index.groupby(X.IMAGE_ID)[X.FACTUAL].sum() == 1).all()
    assert (index[X.GUIDANCE] == 2.0).all() and (index[X.STEPS] == 3).all() and (index[X.RECON_ERROR] > 0).all()
    assert (index[X.MODEL_ID].str.startswith("sd-")).all()
    for col in (X.INPUT_PNG, X.RECON_PNG, X.DIFF_PNG):
        for rel in index[col]:
            with Image.open(out / rel) as im:
                assert im.size[0] >= 128
    assert [p.rsplit("/", 1)[-1] for p in run["gallery"]] == ["gallery-01.png"] and (out / "gallery-01.png").is_file()

    # a method without counterfactuals is refused before anything is written
    fake = save_bundle(tmp_path / "baseline", 1, torch.nn.Linear(1, 1), {
        "kind": "baseline", "model": {"name": "resnet18"}, "class_names": list(CLASSES), "image_size": 32,
        "channels": 1})
    with pytest.raises(CheckpointError, match="'baseline' checkpoint and baseline has no counterfactuals.*sd"):
        explain_results(fake, results, tmp_path / "refused", CF_CFG)
    assert not (tmp_path / "refused").exists()
