"""Fine-tuned Stable Diffusion classifier (method sd): the offline tiny pipeline and its shapes, the engine adapter,
a tiny fine-tune whose loss drops on a handful of real PneumoniaMNIST images, bundle save/load with identical
predictions (also after the tiny folder is rebuilt from its seed), schema-valid vote rows, exact early exit = full-N
vote, and the command line picking the predictor from the bundle's kind."""

import json
import shutil

import numpy as np
import pytest
import torch

from meddiff.cli import main
from meddiff.config import ScoreConfig, load_config
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
