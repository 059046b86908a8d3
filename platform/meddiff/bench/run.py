"""``meddiff bench``: one run, one checkpoint, the same real images, every way of scoring them, side by side.

Variants (all on the same images and noise unless their draws differ):
  reference      the paper's loop (bench.reference): per draw, per class, one forward over the batch; fixed N; fp32
  engine         meddiff's class-batched continuous-batching engine at fixed N
  engine, stratified t / antithetic noise   the engine at fixed N with the other draw layouts (``noise.DrawScheme``)
  exact          + exact early exit (identical predictions to the full vote, proven in tests)
  wilson@delta   + sequential early exit (Wilson bound, union bound over looks) at each delta
  hoeffding@0.01 + anytime-valid Hoeffding early exit, for comparison
  mixture@delta  + anytime-valid mixture SPRT early exit at each delta (leader only)
  mixture@delta every draw  the same rule looking after every draw (more slots keep the forward pass as wide)
  futility@delta + the leader test or, as "refer", the vote shares settled inside the band the 80 %-coverage threshold
                 refers (``stopping.futility_stop``), also every draw, and with stratified t
  wilson_per_look@delta + the Wilson test at delta at every look, uncorrected (its delta does not hold over looks)
  replay         every rule x delta x chunk replayed over the full-N errors of each draw layout (no timing)
  ray            Ray Data scoring with 1 and 2 actors (one thread each) against the in-process engine with one thread
Reported per variant: images/s, mean denoiser evaluations (NFE) per image and their median, p90 and p99, agreement of
the class with the reference's full-N vote, the decision agreement and the accuracy of the accepted images at the
thresholds that give 80 % and 55 % coverage on the full-N vote (``bench.decisions``), accuracy, peak resident memory
of the process while it ran, and an MFU estimate: achieved FLOP/s (model FLOPs per forward from torch's flop counter
x forwards/s) over a matmul peak measured on this machine in the same run.
``scale`` measures Ray scoring throughput and driver memory on 1k vs 10k synthetic images (streaming: both flat).
Output: bench.json and bench.md in the output folder. Figures, never assertions: tests check correctness only.
"""

from __future__ import annotations

import json
import platform
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from meddiff.config import RayConfig, ScoreConfig, config_from_json
from meddiff.data import Manifest
from meddiff.diffusion.engine import EngineSpec, summarize
from meddiff.diffusion.model import load_diffusion_model
from meddiff.diffusion.noise import UNIFORM, DrawScheme, image_seed
from meddiff.diffusion.streaming import StreamSpec, stream_classify
from meddiff.bench.bounds import wald_draws
from meddiff.bench.decisions import COVERAGES, coverage_threshold, decision_stats, nfe_quantiles
from meddiff.bench.reference import reference_errors
from meddiff.bench.replay import NEAR_TIE, near_tied_draws, replay_stopping
from meddiff.progress import Progress


def rss_mb() -> float:
    """Resident memory of this process in MiB (Linux /proc; 0 elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class PeakMemory:
    """Samples this process's RSS (and CUDA's peak allocation) while a block runs."""

    def __enter__(self) -> "PeakMemory":
        self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())
        self.cuda_peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0


def forward_flops(model) -> int:
    """FLOPs of one denoiser forward of one image of the loaded diffusion model ``model``
    (``sizing.footprint.flops_per_forward``: 2 per multiply-add, counted on a ``meta`` copy of the network, where
    attention is counted on every device)."""
    from meddiff.diffusion.model import build_diffusion_model
    from meddiff.sizing.footprint import flops_per_forward

    with torch.device("meta"):
        net = build_diffusion_model(model.model_cfg, model.diffusion, model.class_names, model.image_size,
                                    model.channels).denoiser
        inputs = (torch.zeros(1, *model.model_shape), torch.zeros(1), torch.zeros(1, dtype=torch.long))
    return flops_per_forward(net, inputs)


def matmul_peak(device: torch.device, seconds: float = 3.0) -> float:
    """Best FLOP/s of a square fp32 matmul (bf16 on CUDA) on this device with the current threads."""
    n = 4096 if device.type == "cuda" else 1536
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    best, t_end = 0.0, time.monotonic() + seconds
    while time.monotonic() < t_end:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ a
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


@dataclass
class Variant:
    name: str
    images: int
    seconds: float
    images_per_s: float
    nfe_per_image: float
    agreement: float
    accuracy: float
    peak_rss_mb: float
    achieved_gflops: float
    mfu: float
    notes: str = ""
    draws: str = "uniform"
    nfe_median: float = 0.0
    nfe_p90: float = 0.0
    nfe_p99: float = 0.0
    decision_agreement_80: float = 0.0
    decision_disagreements_80: int = 0
    accepted_accuracy_80: float | None = None
    coverage_80: float = 0.0
    decision_agreement_55: float = 0.0
    decision_disagreements_55: int = 0
    accepted_accuracy_55: float | None = None
    coverage_55: float = 0.0


def _stratified(frame, n: int, seed: int = 0):
    """n rows, as balanced over labels as the split allows, in a seeded order."""
    rng = np.random.default_rng(seed)
    groups = [g.iloc[rng.permutation(len(g))] for _, g in frame.groupby("label")]
    per = n // len(groups)
    picked = [g.iloc[:per] for g in groups]
    rest = n - sum(len(p) for p in picked)
    if rest:
        leftovers = [g.iloc[per:] for g in groups]
        picked.append(pd.concat(leftovers).iloc[:rest])
    return pd.concat(picked).sort_values("id").reset_index(drop=True)


def bench_images(model, n_images: int, split: str = "test"):
    """The checkpoint's manifest, ``n_images`` class-balanced rows of ``split`` (seeded) and their model-space inputs on
    the model's device."""
    from meddiff.data import ImageDecoder
    from meddiff.scoring.local import checkpoint_manifest

    device = next(model.denoiser.parameters()).device
    cfg = config_from_json(model.metadata["config"])
    manifest = checkpoint_manifest(model.metadata, cfg.data, split)
    frame = _stratified(manifest.frame, min(n_images, len(manifest)))
    decoder = ImageDecoder.for_model(model.image_size, model.channels, model.metadata)
    pixels = torch.stack([decoder.decode_row(r) for r in frame.to_dict("records")])
    return manifest, frame, model.to_model_space(pixels).to(device)


def run_benchmark(
    checkpoint: str | Path,
    out_dir: str | Path,
    n_images: int = 120,
    n_draws: int = 501,
    batch_size: int = 32,
    deltas: tuple[float, ...] = (0.05, 0.01),
    chunk: int = 8,
    replay_chunks: tuple[int, ...] = (1, 2, 4, 8, 16),
    decision_zs: tuple[float, ...] = (2.0,),
    skip: tuple[str, ...] = (),
    ray_actors: tuple[int, ...] = (1, 2),
    ray_n_draws: int = 51,
    ray_images: int = 0,
    split: str = "test",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every variant on ``n_images`` images of ``split`` of the checkpoint's data (but those named in ``skip``);
    write bench.json / bench.md."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = load_diffusion_model(checkpoint)
    device = next(model.denoiser.parameters()).device
    manifest, frame, x = bench_images(model, n_images, split)
    y = frame["label"].to_numpy()
    ids = frame["id"].astype(str).tolist()
    seeds = [image_seed(0, i) for i in ids]
    spec = EngineSpec(num_classes=model.num_classes, schedule=model.schedule, time_kind=model.diffusion.time_input,
                      max_batch=256 if device.type == "cpu" else 2048)
    flops = forward_flops(model)
    peak = matmul_peak(device)
    log(f"[bench] {len(ids)} images, N = {n_draws}, model {model.model_id}: {flops / 1e6:.1f} MFLOP per forward; "
        f"matmul peak {peak / 1e9:.1f} GFLOP/s on {device} with {torch.get_num_threads()} threads")
    variants: list[Variant] = []

    thresholds: dict[float, float] = {}
    full: dict[str, np.ndarray] = {}

    def record(name: str, seconds: float, nfe: np.ndarray, pred: np.ndarray, unc: np.ndarray, mem: PeakMemory,
               notes: str = "", draws: str = "uniform") -> None:
        achieved = flops * float(nfe.sum()) / seconds
        v = Variant(name=name, images=len(pred), seconds=round(seconds, 2), images_per_s=round(len(pred) / seconds, 3),
                    nfe_per_image=round(float(nfe.mean()), 1),
                    agreement=round(float((pred == full["pred"]).mean()), 4),
                    accuracy=round(float((pred == y).mean()), 4), peak_rss_mb=round(mem.peak, 1),
                    achieved_gflops=round(achieved / 1e9, 2), mfu=0.0, notes=notes, draws=draws,
                    **nfe_quantiles(nfe), **decision_stats(pred, unc, full["pred"], full["uncertainty"], y, thresholds))
        variants.append(v)
        log(f"[bench] {name:30s} {v.images_per_s:8.3f} img/s  NFE/img {v.nfe_per_image:7.1f} (p90 {v.nfe_p90:.0f})  "
            f"agreement {v.agreement:.3f}  decision agreement @80 % {v.decision_agreement_80:.3f}  "
            f"accuracy {v.accuracy:.3f}  {v.seconds:8.1f} s  peak RSS {v.peak_rss_mb:.0f} MiB")

    # 1. the paper's loop
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        progress = Progress(len(ids), "[bench] reference", unit="img", every_s=30.0, write=log)
        errs = []
        for i in range(0, len(ids), batch_size):
            errs.append(reference_errors(model.denoiser, x[i : i + batch_size], seeds[i : i + batch_size], n_draws, spec))
            progress.update(len(errs[-1]))
        seconds = time.perf_counter() - t0
    ref_errors = torch.cat(errs).cpu()
    ref_summary = summarize(ref_errors)
    full.update(pred=ref_summary.pred_vote.numpy(), uncertainty=ref_summary.uncertainty.numpy())
    thresholds.update({c: coverage_threshold(full["uncertainty"], c) for c in COVERAGES})
    refer_above = thresholds[COVERAGES[0]]
    log(f"[bench] referral thresholds on the full-N vote's uncertainty: "
        + ", ".join(f"{c:.0%} coverage {t:.4f}" for c, t in thresholds.items()))
    record("reference", seconds, np.full(len(ids), n_draws * model.num_classes), full["pred"], full["uncertainty"], mem,
           f"per draw, per class, one forward over {batch_size} images; fp32")
    near = near_tied_draws(ref_errors)

    # 2-5. the engine: fixed N, exact early exit, sequential early exit
    # (name, rule, delta, chunk, slots, draws). The leader-only mixture rule and the futility rule are also measured
    # looking after every draw, with more slots so that a step's forward pass is as wide as at ``chunk`` draws (the
    # rules are anytime-valid: looking costs nothing). Stratified t comes in blocks of ``chunk`` draws: its looks fall
    # on block boundaries, where its guarantee holds.
    wide = max(batch_size, spec.max_batch // model.num_classes)
    stratified = DrawScheme("stratified", strata=chunk)
    antithetic = DrawScheme(antithetic=True)
    runs = [("engine", "none", 0.01, chunk, batch_size, UNIFORM),
            ("engine, stratified t", "none", 0.01, chunk, batch_size, stratified),
            ("engine, antithetic noise", "none", 0.01, chunk, batch_size, antithetic),
            ("exact", "exact", 0.01, chunk, batch_size, UNIFORM)]
    runs += [(f"wilson@{d}", "wilson", d, chunk, batch_size, UNIFORM) for d in deltas]
    runs += [("hoeffding@0.01", "hoeffding", 0.01, chunk, batch_size, UNIFORM)]
    runs += [(f"mixture@{d}", "mixture", d, chunk, batch_size, UNIFORM) for d in deltas]
    runs += [(f"mixture@{d} every draw", "mixture", d, 1, wide, UNIFORM) for d in deltas]
    runs += [(f"wilson_per_look@{d}", "wilson_per_look", d, chunk, batch_size, UNIFORM) for d in deltas]
    runs += [(f"futility@{d}", "futility", d, chunk, batch_size, UNIFORM) for d in deltas]
    runs += [(f"futility@{d} every draw", "futility", d, 1, wide, UNIFORM) for d in deltas]
    runs += [(f"futility@{d}, decision_z {z:g}", "futility", d, chunk, batch_size, UNIFORM, z)
             for d in deltas for z in decision_zs]
    runs += [(f"mixture@{d}, stratified t", "mixture", d, chunk, batch_size, stratified) for d in deltas]
    runs += [(f"futility@{d}, stratified t", "futility", d, chunk, batch_size, stratified) for d in deltas]
    full_errors = {"uniform": ref_errors}
    runs = [r for r in runs if r[0] not in skip]
    for name, rule, delta, k, slots, scheme, *guard in runs:
        stream = StreamSpec(n_draws=n_draws, rule=rule, delta=delta, chunk=k, slots=slots,
                            refer_above=refer_above if rule == "futility" else None,
                            decision_z=guard[0] if guard else 0.0)
        run_spec = replace(spec, draws=scheme)
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            progress = Progress(len(ids), f"[bench] {name}", unit="img", every_s=30.0, write=log)
            res = {}
            for i, r in stream_classify(model.denoiser, ((i, x[i], seeds[i]) for i in range(len(ids))), run_spec,
                                        stream):
                res[i] = r
                progress.update(1)
            seconds = time.perf_counter() - t0
        pred = np.array([res[i].pred_vote for i in range(len(ids))])
        unc = np.array([res[i].uncertainty for i in range(len(ids))])
        nfe = np.array([res[i].n_draws * model.num_classes for i in range(len(ids))])
        notes = f"slots {slots}, chunk {k}" + (", refers at the 80 % coverage threshold" if rule == "futility" else "")
        notes += f", leader stops wait until the entropy is {guard[0]:g} SE from it" if guard else ""
        record(name, seconds, nfe, pred, unc, mem, notes, draws=scheme_name(scheme))
        if rule == "none" and scheme_name(scheme) not in full_errors:
            full_errors[scheme_name(scheme)] = torch.stack([res[i].errors for i in range(len(ids))]).cpu()
    replay = replay_table(full_errors, full, y, deltas, replay_chunks, thresholds, block=chunk)

    # the peak is measured again at the end and the better one kept: on a shared machine one 3 s window can be unlucky
    peak = max(peak, matmul_peak(device))
    for v in variants:
        v.mfu = round(v.achieved_gflops * 1e9 / peak, 4)
    result: dict[str, Any] = {
        "machine": machine(), "checkpoint": str(checkpoint), "model_id": model.model_id, "images": len(ids),
        "n_draws": n_draws, "flops_per_forward": flops, "matmul_peak_flops": peak,
        "variants": [asdict(v) for v in variants], "replay": replay,
        "referral_thresholds": {f"coverage_{round(c * 100)}": t for c, t in thresholds.items()},
        "wald_bound": wald_table(full_errors["uniform"], deltas, refer_above),
        # where the variants may legitimately disagree with the reference (bench.replay.NEAR_TIE)
        "near_tied_draws": int(near.sum()), "near_tied_images": int((near > 0).sum()),
    }
    if ray_actors:
        # a longer job than the variants' by default: actor start-up is a fixed cost a cohort-scale job amortises
        ray_frame = frame if not ray_images else _stratified(manifest.frame, min(ray_images, len(manifest)))
        sub = Manifest(frame=ray_frame, class_names=manifest.class_names, name=manifest.name)
        result["ray"] = ray_comparison(checkpoint, sub, model.metadata, ray_n_draws, ray_actors, batch_size, log)
    result["ratios"] = ratios(result)
    write_outputs(result, out_dir)
    return result


def wald_table(errors: torch.Tensor, deltas: tuple[float, ...], refer_above: float) -> list[dict[str, Any]]:
    """Wald's lower bound on the mean draws (``bench.bounds``) at each delta, leader-only and leader-or-refer at the 80 %
    coverage threshold, from each image's full-N vote share (two classes; empty otherwise)."""
    if errors.shape[1] != 2:
        return []
    n = errors.shape[2]
    shares = (errors.argmin(dim=1) == 0).double().mean(dim=1).numpy()
    rows = []
    for delta in deltas:
        for kind, band in (("leader", None), ("leader or refer", refer_above)):
            draws = float(wald_draws(shares, delta, n, band).mean())
            rows.append({"delta": delta, "stops on": kind, "draws_per_image": round(draws, 1),
                         "nfe_reduction": round(n / draws, 2)})
    return rows


def scheme_name(scheme: DrawScheme) -> str:
    """How a variant's draws were laid out, for tables."""
    if scheme.antithetic:
        return "antithetic" + (", stratified t" if scheme.t_draws == "stratified" else "")
    return "stratified t" if scheme.t_draws == "stratified" else "uniform"


def replay_table(full_errors: dict[str, torch.Tensor], full: dict[str, np.ndarray], y: np.ndarray,
                 deltas: tuple[float, ...], chunks: tuple[int, ...], thresholds: dict[float, float], block: int
                 ) -> list[dict[str, Any]]:
    """Every stopping rule x risk x chunk size replayed over the full-N errors of each draw layout (no denoiser call):
    mean and quantile draws, NFE reduction, agreement of class and decision with the reference's full-N vote (and with
    the layout's own full-N vote) and accuracy, on the same images as the measured variants. Stratified t (blocks of
    ``block`` draws) is replayed at chunks that are multiples of its block only (its guarantee holds on block boundaries); the sequential rules on
    antithetic pairs carry no guarantee (pairs are dependent) and are marked so."""
    from meddiff.diffusion.uncertainty import vote_entropy

    refer_above = thresholds[COVERAGES[0]]
    rows = []
    for layout, errors in full_errors.items():
        n, c = errors.shape[2], errors.shape[1]
        own = summarize(errors)
        for rule in ("exact", "wilson", "wilson_per_look", "hoeffding", "mixture", "futility"):
            for delta in (deltas if rule != "exact" else deltas[:1]):
                for chunk in chunks:
                    if layout.startswith("stratified") and rule != "exact" and chunk % block:
                        continue
                    used, pred, votes = replay_stopping(errors, rule, delta, chunk,
                                                        refer_above if rule == "futility" else None, with_votes=True)
                    unc = vote_entropy(votes).numpy()
                    pred = pred.numpy()
                    nfe = (used * c).numpy()
                    stats = decision_stats(pred, unc, full["pred"], full["uncertainty"], y, thresholds)
                    own_stats = decision_stats(pred, unc, own.pred_vote.numpy(), own.uncertainty.numpy(), y,
                                               thresholds)
                    rows.append({"draws": layout, "rule": rule, "delta": None if rule == "exact" else delta,
                                 "chunk": chunk, "nfe_per_image": round(float(nfe.mean()), 1),
                                 "nfe_reduction": round(n / float(used.double().mean()), 2),
                                 **{k: round(v, 1) for k, v in nfe_quantiles(nfe).items()},
                                 "agreement": round(float((pred == full["pred"]).mean()), 4),
                                 "decision_agreement_80": stats["decision_agreement_80"],
                                 "decision_agreement_55": stats["decision_agreement_55"],
                                 "own_decision_agreement_80": own_stats["decision_agreement_80"],
                                 "accepted_accuracy_80": stats["accepted_accuracy_80"],
                                 "accuracy": round(float((pred == y).mean()), 4),
                                 "guarantee": not (layout.startswith("antithetic") and rule not in ("exact",))})
    return rows


def ray_comparison(checkpoint, manifest: Manifest, bundle_meta: dict, n_draws: int, actors: tuple[int, ...],
                   batch_size: int, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Images/s of the same scoring job in process (one thread) and on Ray Data pools of one-thread actors."""
    import ray

    from meddiff.raycluster import ensure_ray
    from meddiff.scoring.local import score_manifest
    from meddiff.methods import load_predictor
    from meddiff.scoring.ray_pipeline import score_with_ray

    cfg = ScoreConfig(n_draws=n_draws, batch_size=batch_size, shard_size=max(8, len(manifest) // 16), store_draws=False)
    rows = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        predictor = load_predictor(checkpoint, cfg)
        t0 = time.perf_counter()
        score_manifest(predictor, manifest, Path(tmp) / "local", cfg, log=lambda _line: None)
        rows.append({"name": "in-process, 1 thread", "seconds": time.perf_counter() - t0})
        started = ensure_ray("", num_cpus=max(actors) + 1)
        try:
            for n in actors:
                rc = RayConfig(actors=n, cpus_per_actor=1.0, threads_per_actor=1)
                t0 = time.perf_counter()
                score_with_ray(checkpoint, bundle_meta, manifest, Path(tmp) / f"ray{n}", cfg, rc,
                               log=lambda _line: None)
                rows.append({"name": f"ray, {n} actor(s) x 1 thread", "seconds": time.perf_counter() - t0})
        finally:
            if started:
                ray.shutdown()
    torch.set_num_threads(threads)
    for r in rows:
        r["images"] = len(manifest)
        r["n_draws"] = n_draws
        r["images_per_s"] = round(len(manifest) / r["seconds"], 3)
        r["seconds"] = round(r["seconds"], 2)
        log(f"[bench] {r['name']:28s} {r['images_per_s']:8.3f} img/s ({r['seconds']} s, N = {n_draws})")
    return rows


def ratios(result: dict[str, Any]) -> dict[str, float]:
    v = {x["name"]: x for x in result["variants"]}
    out: dict[str, float] = {}
    ref = v["reference"]
    for name, x in v.items():
        if name != "reference":
            out[f"{name} speed-up vs reference (wall clock)"] = round(x["images_per_s"] / ref["images_per_s"], 2)
            out[f"{name} NFE reduction vs N"] = round(ref["nfe_per_image"] / x["nfe_per_image"], 2)
    if "ray" in result:
        r = {x["name"]: x["images_per_s"] for x in result["ray"]}
        local = r.get("in-process, 1 thread")
        one = r.get("ray, 1 actor(s) x 1 thread")
        two = r.get("ray, 2 actor(s) x 1 thread")
        if local and one:
            out["ray 1 actor / in-process"] = round(one / local, 2)
        if one and two:
            out["ray 2 actors / 1 actor"] = round(two / one, 2)
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__, "python": platform.python_version()}


def write_outputs(result: dict[str, Any], out_dir: Path) -> None:
    (out_dir / "bench.json").write_text(json.dumps(result, indent=2))
    m = result["machine"]
    machine_line = (f"Machine: {m['cpu']} ({m['cores']} cores, {m['torch_threads']} torch threads), "
                    f"{m['cuda'] or 'no GPU'}, torch {m['torch']}.")
    if "model_id" in result:
        machine_line += (f" Model {result['model_id']}: {result['flops_per_forward'] / 1e6:.1f} MFLOP per forward; "
                         f"matmul peak {result['matmul_peak_flops'] / 1e9:.1f} GFLOP/s.")
    title = f"N = {result['n_draws']}" if "n_draws" in result else "scale"
    lines = [f"# meddiff benchmark — {result['images']} images, {title}", "", machine_line, ""]
    if result.get("variants"):
        lines += ["| variant | draws | images/s | NFE / image | NFE median / p90 / p99 | class agreement with full vote | "
                  "decision agreement @80 % | @55 % | accepted accuracy @80 % (full vote) | @55 % (full vote) | "
                  "accuracy | peak RSS MiB | GFLOP/s | MFU |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        ref = result["variants"][0]
        for v in result["variants"]:
            lines.append(f"| {v['name']} | {v['draws']} | {v['images_per_s']:.3f} | {v['nfe_per_image']:.1f} | "
                         f"{v['nfe_median']:.0f} / {v['nfe_p90']:.0f} / {v['nfe_p99']:.0f} | {v['agreement']:.3f} | "
                         f"{v['decision_agreement_80']:.3f} | {v['decision_agreement_55']:.3f} | "
                         f"{_pct(v['accepted_accuracy_80'])} ({_pct(ref['accepted_accuracy_80'])}) | "
                         f"{_pct(v['accepted_accuracy_55'])} ({_pct(ref['accepted_accuracy_55'])}) | "
                         f"{v['accuracy']:.3f} | {v['peak_rss_mb']:.0f} | {v['achieved_gflops']:.1f} | {v['mfu']:.3f} |")
        thresholds = result.get("referral_thresholds", {})
        lines += ["", "Decisions: refer when the vote entropy is above the threshold that gives the coverage on the "
                      "reference's full-N vote (" + ", ".join(f"{k.replace('_', ' ')} %: {t:.4f}"
                                                             for k, t in thresholds.items()) + "), else accept the "
                      "predicted class; a decision agrees when both refer, or both accept the same class."]
        lines += ["", f"Agreement below 1 at fixed N can only come from near-tied draws (two best classes within "
                      f"{NEAR_TIE:g} relative, which float rounding in another batch shape may flip): "
                      f"{result['near_tied_draws']} such reference draws in {result['near_tied_images']} image(s).", ""]
    if result.get("replay"):
        lines += ["Stopping rules replayed over the full-N errors of each draw layout (the reference's for uniform t; "
                  "same images, no denoiser call). Agreement is with the reference's full-N vote; \"own\" with the "
                  "layout's own full-N vote. Antithetic rows of sequential rules carry no guarantee (pairs are "
                  "dependent).", "",
                  "| draws | rule | delta | chunk | NFE / image | NFE reduction | NFE p90 | class agreement | "
                  "decision agreement @80 % | (own) | @55 % | accepted accuracy @80 % | accuracy |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r.get('draws', 'uniform')} | {r['rule']}{'' if r.get('guarantee', True) else ' (no guarantee)'} | "
                  f"{r['delta'] if r['delta'] is not None else '-'} | {r['chunk']} | {r['nfe_per_image']:.1f} | "
                  f"{r['nfe_reduction']:.2f} | {r.get('nfe_p90', 0):.0f} | {r['agreement']:.3f} | "
                  f"{r.get('decision_agreement_80', 0):.3f} | {r.get('own_decision_agreement_80', 0):.3f} | "
                  f"{r.get('decision_agreement_55', 0):.3f} | {_pct(r.get('accepted_accuracy_80'))} | "
                  f"{r['accuracy']:.3f} |" for r in result["replay"]]
        lines.append("")
    if result.get("wald_bound"):
        lines += ["Wald's lower bound on the mean draws any rule at risk delta needs on these images' full-N vote shares "
                  "(bench.bounds; independent votes, two classes):", "",
                  "| delta | stops on | draws / image | NFE reduction at best |", "|---:|---|---:|---:|"]
        lines += [f"| {r['delta']} | {r['stops on']} | {r['draws_per_image']:.1f} | {r['nfe_reduction']:.2f} |"
                  for r in result["wald_bound"]]
        lines.append("")
    if result.get("ray"):
        lines += ["| Ray comparison | images/s | seconds |", "|---|---:|---:|"]
        lines += [f"| {r['name']} (N = {r['n_draws']}) | {r['images_per_s']:.3f} | {r['seconds']} |" for r in result["ray"]]
        lines.append("")
    if result.get("scale"):
        lines += ["| scale | images | images/s overall | start-up s (first shard) | images/s after start-up | "
                  "driver peak RSS MiB |", "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['name']} | {r['images']} | {r['images_per_s']:.1f} | {r['start_up_s']} | "
                  f"{r['steady_images_per_s']} | {r['driver_peak_rss_mb']:.0f} |" for r in result["scale"]]
        lines.append("")
    if result.get("ratios"):
        lines += ["| ratio | value |", "|---|---:|"] + [f"| {k} | {v} |" for k, v in result["ratios"].items()]
    (out_dir / "bench.md").write_text("\n".join(lines) + "\n")


def run_scale(out_dir: str | Path, sizes: tuple[int, ...] = (1000, 10000), actors: int = 2,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Ray Data scoring of synthetic phantom sets of each size with a tiny model: throughput and driver peak RSS."""
    import ray

    from meddiff.config import DataConfig, DiffusionConfig, ModelConfig
    from meddiff.data import build_manifest
    from meddiff.diffusion.model import build_diffusion_model
    from meddiff.raycluster import ensure_ray
    from meddiff.scoring.ray_pipeline import score_with_ray
    from meddiff.bundle import read_bundle, save_bundle

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = build_diffusion_model(ModelConfig("unet", {"block_out_channels": [8, 16], "attention": [False, False]}),
                                      DiffusionConfig(wavelet=True), ("normal", "abnormal"), 16, 1)
        bundle = save_bundle(Path(tmp) / "ckpt", 0, model.denoiser,
                             dict(model.metadata_fields(), data_fingerprint="scale", config={}))
        meta = read_bundle(bundle).metadata
        started = ensure_ray("", num_cpus=actors + 1)
        try:
            for size in sizes:
                data = DataConfig(source="phantom", params={"n_per_class": size // 2, "seed": 0}, image_size=16)
                manifest = build_manifest(data)
                cfg = ScoreConfig(n_draws=1, batch_size=64, shard_size=250, split="all", store_draws=False)
                with PeakMemory() as mem:
                    t0 = time.perf_counter()
                    stats = score_with_ray(bundle, meta, manifest, Path(tmp) / f"res{size}", cfg,
                                           RayConfig(actors=actors, cpus_per_actor=1.0, threads_per_actor=1),
                                           log=lambda _line: None)
                    seconds = time.perf_counter() - t0
                steady = stats.get("steady_images_per_s")
                rows.append({"name": f"{size} phantoms, {actors} actors, N = 1", "images": len(manifest),
                             "seconds": round(seconds, 2), "images_per_s": round(len(manifest) / seconds, 1),
                             "start_up_s": round(stats["first_shard_s"], 2),
                             "steady_images_per_s": round(steady, 1) if steady else None,
                             "driver_peak_rss_mb": round(mem.peak, 1)})
                log(f"[bench] scale {size:6d} images: {rows[-1]['images_per_s']:.1f} img/s overall, "
                    f"{rows[-1]['steady_images_per_s']} img/s after the first shard ({rows[-1]['start_up_s']} s), "
                    f"driver peak RSS {rows[-1]['driver_peak_rss_mb']:.0f} MiB")
        finally:
            if started:
                ray.shutdown()
    result = {"machine": machine(), "images": sum(r["images"] for r in rows), "scale": rows}
    write_outputs(result, out_dir)
    return result
