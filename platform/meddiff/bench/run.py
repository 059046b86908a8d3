"""``meddiff bench``: one run, one checkpoint, the same real images, every way of scoring them, side by side.

Variants (all on the same images and noise):
  reference      the paper's loop (bench.reference): per draw, per class, one forward over the batch; fixed N; fp32
  engine         meddiff's class-batched continuous-batching engine at fixed N
  exact          + exact early exit (identical predictions to the full vote, proven in tests)
  wilson@delta   + sequential early exit (Wilson bound, union bound over looks) at each delta
  hoeffding@0.01 + anytime-valid Hoeffding early exit, for comparison
  mixture@delta  + anytime-valid mixture SPRT early exit at each delta
  mixture@delta every draw  the same rule looking after every draw (more slots keep the forward pass as wide)
  wilson_per_look@delta + the Wilson test at delta at every look, uncorrected (its delta does not hold over looks)
  replay         every rule x delta x chunk replayed over the reference's errors (NFE and agreement, no timing)
  ray            Ray Data scoring with 1 and 2 actors (one thread each) against the in-process engine with one thread
Reported per variant: images/s, mean denoiser evaluations (NFE) per image, agreement with the reference's full-N vote,
accuracy, peak resident memory of the process while it ran, and an MFU estimate: achieved FLOP/s (model FLOPs per
forward from torch's flop counter x forwards/s) over a matmul peak measured on this machine in the same run.
``scale`` measures Ray scoring throughput and driver memory on 1k vs 10k synthetic images (streaming: both flat).
Output: bench.json and bench.md in the output folder. Figures, never assertions: tests check correctness only.
"""

from __future__ import annotations

import json
import platform
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from meddiff.config import RayConfig, ScoreConfig, config_from_json
from meddiff.data import Manifest
from meddiff.diffusion.engine import EngineSpec, summarize
from meddiff.diffusion.model import load_diffusion_model
from meddiff.diffusion.noise import image_seed
from meddiff.diffusion.streaming import StreamSpec, stream_classify
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


def forward_flops(denoiser: torch.nn.Module, shape: tuple[int, ...], device: torch.device) -> float:
    """Model FLOPs of one forward of one input (torch.utils.flop_counter; a multiply-add counts 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    z = torch.zeros((4,) + tuple(shape), device=device)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        denoiser(z, torch.zeros(4, device=device), torch.zeros(4, dtype=torch.long, device=device))
    return counter.get_total_flops() / 4


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


def run_benchmark(
    checkpoint: str | Path,
    out_dir: str | Path,
    n_images: int = 120,
    n_draws: int = 501,
    batch_size: int = 32,
    deltas: tuple[float, ...] = (0.05, 0.01),
    chunk: int = 8,
    replay_chunks: tuple[int, ...] = (1, 2, 4, 8, 16),
    ray_actors: tuple[int, ...] = (1, 2),
    ray_n_draws: int = 51,
    ray_images: int = 0,
    split: str = "test",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every variant on ``n_images`` images of ``split`` of the checkpoint's data; write bench.json / bench.md."""
    from meddiff.data import ImageDecoder
    from meddiff.scoring.local import checkpoint_manifest

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = load_diffusion_model(checkpoint)
    device = next(model.denoiser.parameters()).device
    cfg = config_from_json(model.metadata["config"])
    manifest = checkpoint_manifest(model.metadata, cfg.data, split)
    frame = _stratified(manifest.frame, min(n_images, len(manifest)))
    decoder = ImageDecoder.for_model(model.image_size, model.channels, model.metadata)
    pixels = torch.stack([decoder.decode_row(r) for r in frame.to_dict("records")])
    x = model.to_model_space(pixels).to(device)
    y = frame["label"].to_numpy()
    ids = frame["id"].astype(str).tolist()
    seeds = [image_seed(0, i) for i in ids]
    spec = EngineSpec(num_classes=model.num_classes, schedule=model.schedule, time_kind=model.diffusion.time_input,
                      max_batch=256 if device.type == "cpu" else 2048)
    flops = forward_flops(model.denoiser, model.model_shape, device)
    peak = matmul_peak(device)
    log(f"[bench] {len(ids)} images, N = {n_draws}, model {model.model_id}: {flops / 1e6:.1f} MFLOP per forward; "
        f"matmul peak {peak / 1e9:.1f} GFLOP/s on {device} with {torch.get_num_threads()} threads")
    variants: list[Variant] = []

    def record(name: str, seconds: float, nfe: np.ndarray, pred: np.ndarray, ref: np.ndarray | None, mem: PeakMemory,
               notes: str = "") -> None:
        achieved = flops * float(nfe.sum()) / seconds
        v = Variant(name=name, images=len(pred), seconds=round(seconds, 2), images_per_s=round(len(pred) / seconds, 3),
                    nfe_per_image=round(float(nfe.mean()), 1),
                    agreement=round(float((pred == ref).mean()), 4) if ref is not None else 1.0,
                    accuracy=round(float((pred == y).mean()), 4), peak_rss_mb=round(mem.peak, 1),
                    achieved_gflops=round(achieved / 1e9, 2), mfu=0.0, notes=notes)
        variants.append(v)
        log(f"[bench] {name:24s} {v.images_per_s:8.3f} img/s  NFE/img {v.nfe_per_image:7.1f}  agreement "
            f"{v.agreement:.3f}  accuracy {v.accuracy:.3f}  {v.seconds:8.1f} s  peak RSS {v.peak_rss_mb:.0f} MiB")

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
    ref = summarize(ref_errors).pred_vote.numpy()
    record("reference", seconds, np.full(len(ids), n_draws * model.num_classes), ref, ref, mem,
           f"per draw, per class, one forward over {batch_size} images; fp32")
    replay = replay_table(ref_errors, ref, y, deltas, replay_chunks)
    near = near_tied_draws(ref_errors)

    # 2-5. the engine: fixed N, exact early exit, sequential early exit
    # (name, rule, delta, chunk, slots). The mixture rule is also measured looking after every draw, with more slots
    # so that a step's forward pass is as wide as at ``chunk`` draws (the rule is anytime-valid: looking costs nothing)
    wide = max(batch_size, spec.max_batch // model.num_classes)
    runs = [("engine", "none", 0.01, chunk, batch_size), ("exact", "exact", 0.01, chunk, batch_size)]
    runs += [(f"wilson@{d}", "wilson", d, chunk, batch_size) for d in deltas]
    runs += [("hoeffding@0.01", "hoeffding", 0.01, chunk, batch_size)]
    runs += [(f"mixture@{d}", "mixture", d, chunk, batch_size) for d in deltas]
    runs += [(f"mixture@{d} every draw", "mixture", d, 1, wide) for d in deltas]
    runs += [(f"wilson_per_look@{d}", "wilson_per_look", d, chunk, batch_size) for d in deltas]
    for name, rule, delta, k, slots in runs:
        stream = StreamSpec(n_draws=n_draws, rule=rule, delta=delta, chunk=k, slots=slots)
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            progress = Progress(len(ids), f"[bench] {name}", unit="img", every_s=30.0, write=log)
            res = {}
            for i, r in stream_classify(model.denoiser, ((i, x[i], seeds[i]) for i in range(len(ids))), spec, stream):
                res[i] = r
                progress.update(1)
            seconds = time.perf_counter() - t0
        pred = np.array([res[i].pred_vote for i in range(len(ids))])
        nfe = np.array([res[i].n_draws * model.num_classes for i in range(len(ids))])
        record(name, seconds, nfe, pred, ref, mem, f"slots {slots}, chunk {k}")

    # the peak is measured again at the end and the better one kept: on a shared machine one 3 s window can be unlucky
    peak = max(peak, matmul_peak(device))
    for v in variants:
        v.mfu = round(v.achieved_gflops * 1e9 / peak, 4)
    result: dict[str, Any] = {
        "machine": machine(), "checkpoint": str(checkpoint), "model_id": model.model_id, "images": len(ids),
        "n_draws": n_draws, "flops_per_forward": flops, "matmul_peak_flops": peak,
        "variants": [asdict(v) for v in variants], "replay": replay,
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


def replay_table(errors: torch.Tensor, ref: np.ndarray, y: np.ndarray, deltas: tuple[float, ...],
                 chunks: tuple[int, ...]) -> list[dict[str, Any]]:
    """Every stopping rule x risk x chunk size replayed over the reference's full-N errors (no denoiser call): mean draws,
    NFE reduction, agreement with the full vote and accuracy, on the same images and noise as the measured variants."""
    n, c = errors.shape[2], errors.shape[1]
    rows = []
    for rule in ("exact", "wilson", "wilson_per_look", "hoeffding", "mixture"):
        for delta in (deltas if rule != "exact" else deltas[:1]):
            for chunk in chunks:
                used, pred = replay_stopping(errors, rule, delta, chunk)
                rows.append({"rule": rule, "delta": None if rule == "exact" else delta, "chunk": chunk,
                             "nfe_per_image": round(float((used * c).double().mean()), 1),
                             "nfe_reduction": round(n / float(used.double().mean()), 2),
                             "agreement": round(float((pred.numpy() == ref).mean()), 4),
                             "accuracy": round(float((pred.numpy() == y).mean()), 4)})
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
        lines += ["| variant | images/s | NFE / image | agreement with full vote | accuracy | peak RSS MiB | GFLOP/s | MFU |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for v in result["variants"]:
            lines.append(f"| {v['name']} | {v['images_per_s']:.3f} | {v['nfe_per_image']:.1f} | {v['agreement']:.3f} | "
                         f"{v['accuracy']:.3f} | {v['peak_rss_mb']:.0f} | {v['achieved_gflops']:.1f} | {v['mfu']:.3f} |")
        lines += ["", f"Agreement below 1 at fixed N can only come from near-tied draws (two best classes within "
                      f"{NEAR_TIE:g} relative, which float rounding in another batch shape may flip): "
                      f"{result['near_tied_draws']} such reference draws in {result['near_tied_images']} image(s).", ""]
    if result.get("replay"):
        lines += ["Stopping rules replayed over the reference's full-N errors (same images and noise, no denoiser call):",
                  "", "| rule | delta | chunk | NFE / image | NFE reduction | agreement | accuracy |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['rule']} | {r['delta'] if r['delta'] is not None else '-'} | {r['chunk']} | "
                  f"{r['nfe_per_image']:.1f} | {r['nfe_reduction']:.2f} | {r['agreement']:.3f} | {r['accuracy']:.3f} |"
                  for r in result["replay"]]
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
