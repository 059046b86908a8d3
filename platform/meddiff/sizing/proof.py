"""Full-size proofs of a production config: it trains, round-trips and scores on this machine at paper scale.

``prove(config_path, workdir)`` runs, for one config (``jobs/configs/*.yaml``):

1. *Architecture*: every network of the config built at full size on the meta device
   (``meddiff.sizing.networks.full_size_networks``); parameters counted, FLOPs per forward
   (``meddiff.sizing.footprint.flops_per_forward``), the denoiser's / classifier's input and output shapes and, for a
   UNet, the feature shape after every down block and the mid block, checked against ``EXPECTED`` (the paper's
   architectures: Favero et al. 2025, Appendix B.3 UNet and B.4 DiT-B/4; timm's baselines).
2. *Training step*: the method's own training function (``meddiff.methods.train_function``, the loop
   ``meddiff train`` runs) for ONE step at batch 1 on this machine's device, at the config's precision or
   ``precision``; wall time of the step (``metrics.jsonl``'s ``elapsed_s``) and the process's peak RSS during it
   (Linux ``VmHWM``, reset before the step; it includes the interpreter and torch, about 0.5 GB).
3. *Round trip*: the bundle the loop wrote (``meddiff.bundle``) is read and verified (SHA-256 of every file), loaded
   by the method's predictor (``meddiff.methods.load_predictor``, as ``meddiff score`` does) and its weights compared
   tensor by tensor with the file.
4. *Scoring*: two test images scored through ``meddiff.scoring.local.score_manifest`` (the in-process path of
   ``meddiff score``) at N = 2 with every stopping rule of ``meddiff.rules.STOPPING_RULES`` (``futility`` with a
   referral threshold written for this model); every row must be ``ok`` with a class in range and ``nfe`` within
   the budget. Methods whose rows carry no draws (baselines) score once.

The configs point at cluster data; the proof never reads it: it writes a synthetic data set (smooth random images of
the configured size and channels, the source's class names, 8 training images, 2 val, 2 test) and trains and scores
on that.
A config whose networks this machine cannot train (``MEDDIFF_MODELS`` weights absent, e.g. Stable Diffusion) is
proved on the meta device only, and the result says so.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from meddiff.errors import MeddiffError

# The paper's architectures at 256 px, 2 classes (Favero et al. 2025): the networks each config builds, their
# parameters and tensor shapes at batch 1. Diffusion denoisers take the Haar wavelet image 12 x 128 x 128 and return
# the v-prediction of the same shape; ``levels`` are a UNet's features [C, H, W] at each resolution (the first
# residual output of every down block) and after its mid block. Classifiers take 3 x 256 x 256 and return 2 logits;
# their counts are timm's architectures with a 2-class head.
_WAVELET = [1, 12, 128, 128]
_IMAGE, _LOGITS = [1, 3, 256, 256], [1, 2]
PAPER_UNET = {"parameters": 275_579_148, "input_shape": _WAVELET, "output_shape": _WAVELET,  # B.3: 275.6 M
              "levels": [[128, 128, 128], [128, 64, 64], [256, 32, 32], [512, 16, 16], [1024, 8, 8], [1024, 8, 8]]}
PAPER_DIT = {"parameters": 138_500_544, "input_shape": _WAVELET, "output_shape": _WAVELET}  # B.4: DiT-B/4
TIMM_CLASSIFIERS = {"resnet18": 11_177_538, "resnet50": 23_512_130, "efficientnet-b0": 4_010_110,
                    "efficientnet-b4": 17_552_202, "swin-b": 86_745_274, "vit-b16": 85_846_274, "vit-s16": 21_689_474}
# Stable Diffusion 2 base (Rombach et al. 2022) at 256 px: latents 4 x 32 x 32, OpenCLIP ViT-H/14 text tower.
SD2_BASE = {
    "unet": {"parameters": 865_910_724, "input_shape": [1, 4, 32, 32], "output_shape": [1, 4, 32, 32],
             "levels": [[320, 32, 32], [640, 16, 16], [1280, 8, 8], [1280, 4, 4], [1280, 4, 4]]},
    "vae_encoder": {"parameters": 34_163_664, "input_shape": _IMAGE, "output_shape": [1, 8, 32, 32]},
    "text_encoder": {"parameters": 340_387_840, "input_shape": [1, 77], "output_shape": [1, 77, 1024]},
}
# The other diffusion classifiers as configured (no parameter count in their papers at this size; these are the
# counts of the networks the configs build, kept here so that a change to them is seen): MEDiffusion's joint UNet
# (the B.3 UNet without cross-attention, with its classifier head), DiDiCM's DiDiRN, D-Cube's head on the frozen
# B.3 UNet.
EXPECTED: dict[str, dict[str, dict[str, Any]]] = {
    "chexpert-unet-paper": {"denoiser": PAPER_UNET},
    "isic-unet-paper": {"denoiser": PAPER_UNET},
    "chexpert-dit-paper": {"denoiser": PAPER_DIT},
    **{f"{data}-{net}-paper": {"classifier": {"parameters": n, "input_shape": _IMAGE, "output_shape": _LOGITS}}
       for data in ("chexpert", "isic") for net, n in TIMM_CLASSIFIERS.items()},
    "chexpert-sd-paper": SD2_BASE,
    "chexpert-mediffusion": {"joint_unet": {"parameters": 256_687_886, "input_shape": _WAVELET,
                                            "output_shape": _WAVELET, "levels": PAPER_UNET["levels"]}},
    "chexpert-didicm": {"didirn": {"parameters": 12_420_418, "input_shape": _IMAGE, "output_shape": _LOGITS}},
    "chexpert-dcube-paper": {"frozen_denoiser": PAPER_UNET,
                             "head": {"parameters": 2_628_098, "input_shape": [1, 5120], "output_shape": _LOGITS}},
}


@dataclass(frozen=True)
class NetworkProof:
    """One network of a config at full size: parameters, FLOPs per forward (batch 1), shapes, where it was run."""

    name: str
    parameters: int
    flops: float | None
    input_shape: list[int] | None
    output_shape: list[int] | None
    levels: list[list[int]] = field(default_factory=list)


@dataclass
class ProofResult:
    """The outcome of ``prove`` for one config. ``ran`` lists what really ran on this machine, ``meta_only`` what
    was only built on the meta device (and why); ``failures`` is empty when the proof passed."""

    config: str
    name: str
    method: str
    networks: list[NetworkProof] = field(default_factory=list)
    precision: str = ""
    step_seconds: float | None = None
    train_cpu_seconds: float | None = None
    peak_rss_gb: float | None = None
    bundle_gb: float | None = None
    scored: dict[str, dict[str, Any]] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)
    meta_only: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    data: str = "synthetic"

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["passed"] = self.passed
        return out


class ProofError(MeddiffError):
    """A config that cannot be proved (unreadable, or a check found a defect)."""


# ---------------------------------------------------------------------------------------------------------------- data

def class_names_of(source: str) -> tuple[str, ...]:
    """The class names the data source ``source`` produces (its module's ``CLASS_NAMES``), without reading its data."""
    from meddiff.data.sources import SOURCES

    if source not in SOURCES:
        raise ProofError(f"data.source: unknown source {source!r}; known sources are {sorted(SOURCES)}")
    module = importlib.import_module(SOURCES[source][1].__module__)
    names = getattr(module, "CLASS_NAMES", None)
    if not names:
        raise ProofError(f"data.source {source!r} declares no CLASS_NAMES; the proof cannot make synthetic data for it")
    return tuple(names)


def synthetic_data(folder: Path, image_size: int, channels: int, class_names: Sequence[str], train_per_class: int = 4,
                   per_class: int = 1, seed: int = 0) -> dict[str, Any]:
    """Write smooth random PNG images of ``image_size`` pixels and ``channels`` channels under ``folder`` with
    ``images.csv``: ``train_per_class`` per class in train (8 for two classes: D-Cube's Gaussianity test needs 8),
    ``per_class`` per class in val and test; returns the ``image_csv`` source params describing them. The same
    arguments write the same files (so two configs proved in one workdir share a data fingerprint)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    csv = folder / "images.csv"
    rng = np.random.default_rng(seed)
    lines = ["path,label,split"]
    for split in ("train", "val", "test"):
        for label, _name in enumerate(class_names):
            for i in range(train_per_class if split == "train" else per_class):
                coarse = rng.uniform(0, 255, size=(8, 8, channels))
                img = Image.fromarray(coarse.astype(np.uint8).squeeze(-1) if channels == 1 else coarse.astype(np.uint8))
                img = img.resize((image_size, image_size), Image.BICUBIC)
                rel = f"{split}_{label}_{i}.png"
                img.save(folder / rel)
                lines.append(f"{rel},{label},{split}")
    csv.write_text("\n".join(lines) + "\n")
    return {"csv": str(csv), "label_column": "label", "label_names": {str(k): n for k, n in enumerate(class_names)},
            "split_column": "split"}


def proof_config(cfg, workdir: Path, precision: str | None):
    """``cfg`` on synthetic data in ``workdir``, one training step at batch 1 on this machine, bundles under
    ``workdir/runs``; everything else (model, diffusion, method options, optimiser) as configured."""
    from meddiff.config import DataConfig

    d = cfg.data
    names = class_names_of(d.source)
    params = synthetic_data(workdir / "data" / f"{d.source}-{d.image_size}-{d.channels}", d.image_size, d.channels,
                            names)
    data = DataConfig(source="image_csv", params=params, image_size=d.image_size, channels=d.channels, balance=False,
                      split_seed=d.split_seed, aspect=d.aspect)
    train = dataclasses.replace(cfg.train, steps=1, batch_size=1, device="cpu", num_workers=0, log_every=1,
                                checkpoint_every=1, keep_checkpoints=0,
                                precision=precision or cfg.train.precision)
    return dataclasses.replace(cfg, data=data, train=train, output_dir=str(workdir / "runs"))


# ------------------------------------------------------------------------------------------------------- architecture

def _rss_gb(key: str) -> float | None:
    """``VmHWM`` (peak) or ``VmRSS`` of this process in GB (Linux), None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset this process's peak RSS (``VmHWM``) so the next reading is the peak of what follows (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _shape(value) -> list[int] | None:
    import torch

    if torch.is_tensor(value):
        return list(value.shape)
    if isinstance(value, (tuple, list)) and value:
        return _shape(value[0])
    for attr in ("sample", "last_hidden_state", "latent_dist"):  # diffusers / transformers output objects
        inner = getattr(value, attr, None)
        if inner is not None:
            return _shape(getattr(inner, "parameters", inner))
    return None


def _level_shape(out) -> list[int]:
    """[C, H, W] of a UNet level: a down block returns (hidden, (residual outputs...)); its first residual output is
    at the level's resolution (before the downsampler); a mid block returns its features."""
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], tuple) and out[1]:
        return _shape(out[1][0])[1:]
    return _shape(out)[1:]


def network_proofs(cfg, config_dir: Path | None = None) -> list[NetworkProof]:
    """Every network of ``cfg`` at full size on the meta device, with parameters, FLOPs and shapes at batch 1
    (``config_dir``: the config file's folder, where a D-Cube config finds its frozen model's config)."""
    import torch

    from meddiff.sizing.footprint import flops_per_forward
    from meddiff.sizing.networks import example_inputs, full_size_networks

    proofs = []
    for name, model in full_size_networks(cfg, device="meta", config_dir=config_dir).items():
        params = sum(p.numel() for p in model.parameters())
        inputs = tuple(example_inputs(cfg, name, 1, "meta", config_dir=config_dir))
        levels: list[list[int]] = []
        hooks = []
        for mod_name, mod in model.named_modules():
            last = mod_name.rsplit(".", 1)[-1]
            parent = mod_name.rsplit(".", 2)[-2] if mod_name.count(".") >= 1 else ""
            if (parent == "down_blocks" and last.isdigit()) or last == "mid_block":
                hooks.append(mod.register_forward_hook(lambda _m, _i, out: levels.append(_level_shape(out))))
        with torch.no_grad():
            out = model(*inputs)
        for h in hooks:
            h.remove()
        first = inputs[0]
        try:
            flops = float(flops_per_forward(model, inputs))
        except Exception:  # noqa: BLE001 - a network the FLOP counter cannot trace still gets its other figures
            flops = None
        proofs.append(NetworkProof(name, params, flops, _shape(first), _shape(out), levels))
    return proofs


def check_expected(result: ProofResult, expected: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """Differences between ``result.networks`` and the table ``expected`` (default ``EXPECTED``) for this config's
    name; a config or network missing from the table is a difference too (a new config needs its row)."""
    table = EXPECTED if expected is None else expected
    rows = table.get(result.name)
    if rows is None:
        return [f"{result.name}: no row in meddiff.sizing.proof.EXPECTED (add the paper's figures for this config)"]
    problems = []
    got = {n.name: n for n in result.networks}
    for net, want in rows.items():
        have = got.get(net)
        if have is None:
            problems.append(f"{result.name}: network {net!r} was not built (built: {sorted(got)})")
            continue
        for key, value in want.items():
            if getattr(have, key) != value:
                problems.append(f"{result.name}/{net}: {key} is {getattr(have, key)}, expected {value}")
    return problems


# ------------------------------------------------------------------------------------------------------------ running

def trainable_here(cfg) -> str:
    """"" when this machine can run the config's training step; otherwise why not (e.g. absent pretrained weights)."""
    pretrained = dict(cfg.method_options).get("pretrained") if cfg.method_options else None
    if pretrained:
        path = Path(os.path.expandvars(str(pretrained))).expanduser()
        if "$" in str(path) or not path.exists():
            return f"pretrained weights {pretrained!r} are not on this machine"
    return ""


def _weights_equal(bundle_path: Path, loaded) -> tuple[int, list[str]]:
    """Compare the bundle's model.safetensors with the state of the module the predictor loaded: (tensors compared,
    problems)."""
    import torch
    from safetensors.torch import load_file

    saved = load_file(str(bundle_path / "model.safetensors"))
    # the predictor holds its network directly or one attribute down (e.g. DiffusionPredictor.model.denoiser)
    candidates = [loaded] + list(vars(loaded).values())
    candidates += [m for c in list(candidates) for m in (vars(c).values() if hasattr(c, "__dict__") else [])]
    for module in candidates:
        if isinstance(module, torch.nn.Module):
            state = module.state_dict()
            if set(state) == set(saved):
                bad = [k for k, v in saved.items() if not torch.equal(state[k].cpu(), v)]
                return len(saved), [f"weight {k} differs after reloading" for k in bad[:5]]
    return 0, [f"{bundle_path}: no module of the loaded predictor holds the bundle's {len(saved)} tensors"]


def _referral_file(path: Path, model_id: str) -> Path:
    """A referral.json (``meddiff calibrate``'s format) referring images whose uncertainty exceeds 0.5."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rule": "proof", "alpha": 0.1, "delta": 0.1, "threshold": 0.5, "model_id": model_id}))
    return path


def scoring_config(cfg, n_draws: int = 2):
    """``cfg.score`` for the proof: N = ``n_draws``, a look after every draw, fp32 on the CPU, no stored draws."""
    return dataclasses.replace(cfg.score, n_draws=n_draws, chunk_draws=1, batch_size=2, device="cpu",
                               precision="fp32", limit=0, shard_size=256, store_draws=False, referral="",
                               num_threads=0, compile=False)


def score_rules(predictor, cfg, out_root: Path, rules: Sequence[str]) -> dict[str, dict]:
    """Score the test split (2 images) of ``cfg.data`` with ``predictor`` (loaded from the bundle by
    ``meddiff.methods.load_predictor`` with ``scoring_config``) once per stopping rule in ``rules`` through
    ``score_manifest``: the predictor is rebuilt around the same loaded model per rule. Methods whose rows carry no
    draws score once, with the predictor as loaded. Returns per rule {rows, ok, seconds, nfe, problems}."""
    import pandas as pd

    from meddiff.methods import get_method
    from meddiff.rules import stopping_rule
    from meddiff.scoring.local import checkpoint_manifest, score_manifest

    meta = predictor.metadata
    votes = get_method(meta["kind"]).votes
    manifest = checkpoint_manifest(meta, cfg.data, "test")
    base, k = predictor.cfg, len(meta["class_names"])
    out: dict[str, dict] = {}
    for rule in (rules if votes else ["none"]):
        referral = str(_referral_file(out_root / "referral.json", meta["model_id"])) \
            if stopping_rule(rule).uses_referral else ""
        sc = dataclasses.replace(base, stopping=rule, referral=referral)
        # a method with draws takes the rule from its ScoreConfig: the same loaded model under each rule's config
        p = type(predictor)(predictor.model, sc, predictor.device) if votes else predictor
        folder = out_root / f"score-{rule}"
        shutil.rmtree(folder, ignore_errors=True)
        t0 = time.monotonic()
        score_manifest(p, manifest, folder, sc)
        seconds = time.monotonic() - t0
        rows = pd.concat([pd.read_parquet(f) for f in sorted(folder.glob("shard-*.parquet"))], ignore_index=True)
        problems = []
        if len(rows) != len(manifest):
            problems.append(f"{len(rows)} rows for {len(manifest)} images")
        if (rows["status"] != "ok").any():
            problems.append(f"rows not ok: {rows.loc[rows['status'] != 'ok', 'error'].tolist()}")
        if not rows["pred"].between(0, k - 1).all():
            problems.append(f"pred outside 0..{k - 1}: {rows['pred'].tolist()}")
        if votes and "nfe" in rows and (rows["nfe"] > sc.n_draws * k).any():
            problems.append(f"nfe {rows['nfe'].tolist()} above N x classes = {sc.n_draws * k}")
        if referral and ("decision" not in rows or rows["decision"].isna().any()):
            problems.append("rows without an accept/refer decision under a referral threshold")
        out[rule if votes else "(no draws)"] = {
            "rows": len(rows), "ok": int((rows["status"] == "ok").sum()), "seconds": round(seconds, 2),
            "nfe": [int(v) for v in rows["nfe"]] if "nfe" in rows else None, "problems": problems}
    return out


def prove(config_path: str | Path, workdir: str | Path, rules: Sequence[str] | None = None,
          precision: str | None = None, train: bool = True, keep: bool = False, twin: str = "",
          log=None) -> ProofResult:
    """Prove one config at full size (module docstring); never raises for a defect it finds: the defect is a line
    of ``ProofResult.failures``. ``rules``: stopping rules to score with (default: all); ``precision``: override of
    ``train.precision`` for the step (``fp32`` / ``bf16``; default as configured); ``train=False`` only builds on the
    meta device; ``keep`` keeps the bundles and results under ``workdir``."""
    from meddiff.config import load_config
    from meddiff.rules import STOPPING_RULES

    t_start = time.monotonic()
    say = log or (lambda _line: None)
    config_path = Path(config_path)
    workdir = Path(workdir)
    cfg = load_config(config_path)
    result = ProofResult(config=str(config_path), name=cfg.name, method=cfg.method)
    try:
        result.networks = network_proofs(cfg, config_path.parent)
    except Exception as exc:  # noqa: BLE001 - the defect is the result
        result.failures.append(f"building at full size on the meta device: {type(exc).__name__}: {exc}")
    result.failures += [p for p in check_expected(result) if result.networks]
    reason = trainable_here(cfg) or (f"same networks and training path as {twin}, proved there" if twin else "")
    if not train or reason:
        result.meta_only.append(f"training step, round trip and scoring: {reason or 'not asked (train=False)'}")
        result.seconds = round(time.monotonic() - t_start, 2)
        return result
    run_cfg = proof_config(cfg, workdir, precision)
    result.precision = run_cfg.train.precision
    run_dir = Path(run_cfg.run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    try:
        from meddiff.methods import train_function

        say(f"[prove] {cfg.name}: one training step at batch 1 ({result.precision}) on synthetic data")
        _reset_peak()
        cpu0 = time.process_time()
        bundle_path = train_function(cfg.method)(run_cfg)
        result.train_cpu_seconds = round(time.process_time() - cpu0, 1)
        result.peak_rss_gb = _rss_gb("VmHWM")
        lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
        step_line = [m for m in lines if "elapsed_s" in m][-1]
        result.step_seconds = step_line["elapsed_s"]
        if not math.isfinite(float(step_line["loss"])):
            result.failures.append(f"training loss {step_line['loss']}")
        result.ran.append(f"training step (batch 1, {result.precision}, {run_cfg.train.device})")
    except Exception as exc:  # noqa: BLE001
        result.failures.append(f"training step: {type(exc).__name__}: {exc}")
        result.seconds = round(time.monotonic() - t_start, 2)
        return result
    try:
        from meddiff.bundle import read_bundle
        from meddiff.methods import load_predictor

        bundle = read_bundle(bundle_path)  # verifies the SHA-256 of every file
        result.bundle_gb = round(sum(f.stat().st_size for f in Path(bundle.path).rglob("*") if f.is_file()) / 1e9, 3)
        predictor = load_predictor(bundle.path, scoring_config(run_cfg))  # what `meddiff score` loads
        n, problems = _weights_equal(Path(bundle.path), predictor)
        result.failures += problems
        if not problems:
            result.ran.append(f"bundle round trip ({n} tensors equal, {result.bundle_gb} GB)")
        names = list(rules) if rules is not None else list(STOPPING_RULES)
        result.scored = score_rules(predictor, run_cfg, run_dir / "proof-scores", names)
        for rule, rec in result.scored.items():
            result.failures += [f"scoring ({rule}): {p}" for p in rec["problems"]]
        result.ran.append(f"scoring 2 images at N = 2 ({', '.join(result.scored)})")
    except Exception as exc:  # noqa: BLE001
        result.failures.append(f"round trip / scoring: {type(exc).__name__}: {exc}")
    finally:
        if not keep and not cfg.method == "diffusion":
            shutil.rmtree(run_dir, ignore_errors=True)
    result.seconds = round(time.monotonic() - t_start, 2)
    return result


def proof_order(config_paths: Sequence[str | Path]) -> list[Path]:
    """The configs in the order ``prove_all`` runs them: diffusion classifiers first (a D-Cube config reads the
    diffusion run it names from ``output_dir``, which a proof of that run in the same workdir provides), then as given."""
    from meddiff.config import load_config

    paths = [Path(p) for p in config_paths]
    return sorted(paths, key=lambda p: load_config(p).method != "diffusion")


def prove_all(config_paths: Sequence[str | Path], workdir: str | Path, rules: Sequence[str] | None = None,
              precision: str | None = None, train: bool = True, log=None, on_result=None,
              isolate: bool = False) -> list[ProofResult]:
    """``prove`` every config in one workdir (``proof_order``), results in the order given; ``on_result`` is called
    with each result as it is ready (a run over every config takes long); ``isolate`` proves each config in its own
    process (peak RSS per config)."""
    results = {}
    for p in proof_order(config_paths):
        results[p] = _prove_isolated(p, workdir, rules, precision, train) if isolate else \
            prove(p, workdir, rules=rules, precision=precision, train=train, log=log)
        if on_result is not None:
            on_result(results[p])
    return [results[Path(p)] for p in config_paths]


def _prove_isolated(path: Path, workdir, rules, precision, train) -> ProofResult:
    """``prove`` in a fresh process, so that its peak RSS is its own (memory an earlier config left to the allocator
    would count otherwise); its lines go to this process's stdout."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(prove, path, workdir, rules, precision, train, False, "", print).result()


def _fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value / scale, spec)


def proof_table(results: Sequence[ProofResult]) -> str:
    """A markdown table, one row per network of every config: parameters, GFLOPs per forward at batch 1, the
    training step's time and peak RSS on this machine, and the outcome (passed, meta device only, or what failed)."""
    lines = ["| config | network | parameters | GFLOPs / forward | CPU step (s) | peak RSS (GB) | result |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in results:
        if r.failures:
            outcome = "FAILED: " + "; ".join(r.failures)
        elif r.meta_only:
            outcome = "passed on the meta device only (" + "; ".join(r.meta_only) + ")"
        else:
            outcome = f"passed ({r.precision} step, round trip, scoring: {', '.join(r.scored)})"
        nets = r.networks or [NetworkProof("?", 0, None, None, None)]
        for i, n in enumerate(nets):
            lines.append(f"| {Path(r.config).name if i == 0 else ''} | {n.name} | {n.parameters / 1e6:.1f} M | "
                         f"{_fmt(n.flops, '.1f', 1e9)} | {_fmt(r.step_seconds if i == 0 else None, '.1f')} | "
                         f"{_fmt(r.peak_rss_gb if i == 0 else None, '.1f')} | {outcome if i == 0 else ''} |")
    return "\n".join(lines)
