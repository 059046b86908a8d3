"""``meddiff bench --kernels``: do bf16 autocast, channels-last memory or torch.compile pay for this checkpoint's
denoiser on this device, and what do they do to the votes?

Each option scores the same images and draws with the class-batched engine (``diffusion.engine.draw_errors``) at the
engine's forward-pass width (and fp32 at other widths, ``score.max_batch``); reported are forwards/s (best of ``repeats`` timed passes after a warm-up), the speed-up
over fp32, the largest relative change of a per-draw error, and the share of draws whose vote (the class of lowest
error) differs from fp32's. The predictor adopts an option by default only where it pays and leaves exact rules exact:
on CPU nothing is on by default (``score.precision: auto`` is fp32 there, channels-last defaults on for CUDA only,
``score.compile`` is opt-in); these figures are the evidence. Figures, never assertions.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch

from meddiff.bench.run import bench_images, machine
from meddiff.diffusion.engine import EngineSpec, draw_errors
from meddiff.diffusion.model import load_diffusion_model
from meddiff.diffusion.noise import image_seed

OPTIONS = ("fp32", "bf16 autocast", "channels-last", "channels-last + bf16", "torch.compile")
WIDTHS = (32, 64, 128, 512)  # other forward-pass widths (denoiser inputs per pass) to time in fp32


def _denoiser(model, option: str):
    net = copy.deepcopy(model.denoiser).eval()
    if "channels-last" in option:
        net = net.to(memory_format=torch.channels_last)
    if option == "torch.compile":
        net = torch.compile(net)
    return net


def run_kernels(checkpoint: str | Path, out_dir: str | Path, n_images: int = 16, n_draws: int = 16,
                repeats: int = 2, options: tuple[str, ...] = OPTIONS, widths: tuple[int, ...] = WIDTHS,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Time every option of ``options`` (at the engine's default forward width) and fp32 at each of ``widths`` on
    ``n_images`` test images x ``n_draws`` draws; write kernels.json / .md."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = load_diffusion_model(checkpoint)
    device = next(model.denoiser.parameters()).device
    _, frame, x = bench_images(model, n_images)
    seeds = [image_seed(0, str(i)) for i in frame["id"]]
    base = EngineSpec(num_classes=model.num_classes, schedule=model.schedule, time_kind=model.diffusion.time_input,
                      max_batch=256 if device.type == "cpu" else 2048)
    forwards = len(seeds) * n_draws * model.num_classes
    rows: list[dict[str, Any]] = []
    reference = None
    runs = [(option, base.max_batch) for option in options]
    runs += [("fp32", w) for w in widths if w != base.max_batch and "fp32" in options]
    for option, width in runs:
        spec = replace(base, autocast_dtype=torch.bfloat16 if "bf16" in option else None,
                       channels_last="channels-last" in option, max_batch=width)
        if width != base.max_batch:
            option = f"fp32, width {width}"
        try:
            net = _denoiser(model, option)
            with torch.inference_mode():
                draw_errors(net, x[:2], seeds[:2], range(2), spec)  # warm-up (and compilation)
                best = float("inf")
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    errors, _ = draw_errors(net, x, seeds, range(n_draws), spec)
                    best = min(best, time.perf_counter() - t0)
        except Exception as exc:  # an option this machine cannot run (e.g. no compiler for torch.compile)
            rows.append({"option": option, "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
            log(f"[kernels] {option:22s} failed: {rows[-1]['error']}")
            continue
        if reference is None:
            reference = errors
        rel = ((errors - reference).abs() / reference.abs().clamp(min=1e-12)).max().item()
        flips = (errors.argmin(dim=1) != reference.argmin(dim=1)).double().mean().item()
        rows.append({"option": option, "width": width, "forwards_per_s": round(forwards / best, 1),
                     "seconds": round(best, 3),
                     "speedup_vs_fp32": round(rows[0]["seconds"] / best, 3) if rows and "seconds" in rows[0] else 1.0,
                     "max_relative_error_change": rel, "vote_flips": round(flips, 5)})
        log(f"[kernels] {option:22s} {rows[-1]['forwards_per_s']:9.1f} forwards/s  x{rows[-1]['speedup_vs_fp32']:.2f} "
            f"vs fp32  max rel. error change {rel:.2e}  votes flipped {flips:.4f}")
    result = {"machine": machine(), "checkpoint": str(checkpoint), "model_id": model.model_id, "device": str(device),
              "images": len(seeds), "draws": n_draws, "forwards": forwards, "default_width": base.max_batch,
              "options": rows}
    (out_dir / "kernels.json").write_text(json.dumps(result, indent=2))
    lines = [f"# meddiff kernels — {model.model_id} on {device}, {len(seeds)} images x {n_draws} draws x "
             f"{model.num_classes} classes; forward width {base.max_batch} unless stated", "",
             "| option | forwards/s | speed-up vs fp32 | max relative error change | votes flipped |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['option']} | failed: {r['error']} | | | |")
        else:
            lines.append(f"| {r['option']} | {r['forwards_per_s']:.1f} | {r['speedup_vs_fp32']:.2f} | "
                         f"{r['max_relative_error_change']:.2e} | {r['vote_flips']:.4f} |")
    (out_dir / "kernels.md").write_text("\n".join(lines) + "\n")
    return result
