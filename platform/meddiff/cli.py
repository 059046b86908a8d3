"""The meddiff command line: ``meddiff train | score | calibrate | cv | explain | report | serve | dashboard | demo |
submit | presets | data``.

A thin layer: every command parses its arguments and calls one library function.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from meddiff.rules import REFERRAL_RULES, STOPPING_RULES, scoring_rules
from meddiff.errors import MeddiffError


def _overrides(pairs: list[str] | None) -> dict:
    from meddiff.config import parse_override

    return dict(parse_override(p) for p in pairs or [])


def _ray_overrides(args: argparse.Namespace, key: str, value) -> dict:
    """The --set overrides, plus ``key`` = ``value`` (a worker or actor count) and ray.address when given."""
    overrides = _overrides(args.set)
    if value is not None:
        overrides[key] = value
    if args.address is not None:
        overrides["ray.address"] = args.address
    return overrides


def cmd_train(args: argparse.Namespace) -> int:
    from meddiff.config import load_config
    from meddiff.train.ray_trainer import train

    cfg = load_config(args.config, _ray_overrides(args, "ray.num_workers", args.workers))
    bundle = train(cfg)  # the diffusion or baseline loop (cfg.method), in this process or with Ray Train
    print(f"checkpoint: {bundle}")
    return 0


def _score_data_config(data_arg: str | None, checkpoint: str):
    from meddiff.config import DataConfig, config_from_json, load_config
    from meddiff.bundle import read_bundle

    if data_arg is None:
        return config_from_json(read_bundle(checkpoint).metadata["config"]).data
    if data_arg.endswith(".npz"):
        return DataConfig(source="medmnist", params={"path": data_arg})
    return load_config(data_arg).data


def _job_configs(args: argparse.Namespace, section: str, cls, flags: dict):
    """(section config, RayConfig) of a score or explain job: the --config file's ``section`` and ``ray`` (defaults
    without one), then the command's flags that were given, then every --set override."""
    from meddiff.config import RayConfig, apply_overrides, from_dict, load_config, to_dict

    cfg = load_config(args.config) if args.config else None
    base = {section: to_dict(getattr(cfg, section)) if cfg else {}, "ray": to_dict(cfg.ray) if cfg else {}}
    base[section].update({k: v for k, v in flags.items() if v is not None})
    if args.actors is not None:
        base["ray"]["actors"] = args.actors
    if args.address is not None:
        base["ray"]["address"] = args.address
    raw = apply_overrides(base, _overrides(args.set))
    return from_dict(cls, raw[section], section), from_dict(RayConfig, raw["ray"], "ray")


def cmd_score(args: argparse.Namespace) -> int:
    from meddiff.config import ScoreConfig
    from meddiff.results.summary import format_summary
    from meddiff.scoring.local import score_checkpoint

    score_cfg, ray_cfg = _job_configs(args, "score", ScoreConfig, {
        "n_draws": args.n_draws, "seed": args.seed, "split": args.split, "batch_size": args.batch_size,
        "rule": args.rule, "limit": args.limit, "stopping": args.stopping, "delta": args.delta,
        "referral": args.referral and str(Path(args.referral).expanduser().resolve())})  # actors: other cwd
    data_cfg = _score_data_config(args.data, args.checkpoint)
    tracking = _score_tracking(args)
    use_ray = args.ray or args.actors is not None or args.address is not None
    if use_ray:
        from meddiff.raycluster import ray_session

        with ray_session(ray_cfg.address):
            summary = score_checkpoint(args.checkpoint, data_cfg, score_cfg, args.out, ray_cfg=ray_cfg,
                                       force_new=args.force_new, tracking=tracking)
    else:
        summary = score_checkpoint(args.checkpoint, data_cfg, score_cfg, args.out, force_new=args.force_new,
                                   tracking=tracking)
    out = summary.get("out_dir", args.out)
    if Path(out) != Path(args.out):
        print(f"--force-new: {args.out} holds results of other settings; writing to {out}", file=sys.stderr)
    print(format_summary(summary))
    print(f"results: {out}")
    if args.json:
        from meddiff.durable import atomic_write_json

        atomic_write_json(args.json, summary)
    return 0


def _score_tracking(args: argparse.Namespace):
    """The MLflow settings of a scoring job: the --config file's ``tracking`` section, else the checkpoint's training
    config's, with the ``--set tracking.*`` overrides; None (the checkpoint's, in ``score_checkpoint``) without both."""
    from meddiff.bundle import read_bundle
    from meddiff.config import TrackingConfig, apply_overrides, config_from_json, from_dict, load_config, to_dict

    sets = {k: v for k, v in _overrides(args.set).items() if k.startswith("tracking.")}
    if not args.config and not sets:
        return None
    saved = read_bundle(args.checkpoint).metadata.get("config")
    cfg = load_config(args.config) if args.config else config_from_json(saved) if saved else None
    base = {"tracking": to_dict(cfg.tracking) if cfg else {}}
    return from_dict(TrackingConfig, apply_overrides(base, sets)["tracking"], "tracking")


def cmd_demo(args: argparse.Namespace) -> int:
    from meddiff.demo import run_demo

    run_demo(dataset=args.dataset, output_dir=args.output_dir, overrides=_overrides(args.set), fresh=args.fresh)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from meddiff.submit import submit

    entry = args.entrypoint[1:] if args.entrypoint[:1] == ["--"] else args.entrypoint
    submit(args.address, entry, working_dir=args.working_dir, wait=not args.no_wait)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from meddiff.bench.run import run_benchmark, run_scale

    if args.data_path:
        from meddiff.bench.datapath import DataPathConfig, run_datapath

        run_datapath(args.out, DataPathConfig(images=args.images, ray_cpus=tuple(args.ray_actors)))
        print(Path(args.out, "datapath.md").read_text())
        return 0
    if args.scale:
        run_scale(args.out, sizes=tuple(args.scale_sizes))
    elif args.kernels:
        from meddiff.bench.kernels import run_kernels

        run_kernels(args.checkpoint, args.out)
        print(Path(args.out, "kernels.md").read_text())
        return 0
    else:
        run_benchmark(args.checkpoint, args.out, n_images=args.images, n_draws=args.n_draws,
                      batch_size=args.batch_size, deltas=tuple(args.deltas), chunk=args.chunk,
                      ray_actors=tuple(args.ray_actors), ray_n_draws=args.ray_n_draws,
                      ray_images=args.ray_images, decision_zs=tuple(args.decision_z), skip=tuple(args.skip))
    print(Path(args.out, "bench.md").read_text())
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from meddiff.sizing.plan import format_plan, plan_config

    decode_rate = args.decode_rate
    if args.datapath:
        from meddiff.bench.datapath import read_datapath, slowest_per_core

        decode_rate = slowest_per_core(read_datapath(args.datapath))
    plan = plan_config(args.config, gpu=args.gpu, gpus=args.gpus, mfu=args.mfu, cohort=args.cohort, bench=args.bench,
                       decode_rate=decode_rate)
    print(format_plan(plan))
    if args.json:
        from meddiff.durable import atomic_write_json

        atomic_write_json(args.json, plan.to_json())
        print(f"plan: {args.json}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from meddiff.config import PRESETS_DIR, preset_names

    for name in preset_names():
        first = (PRESETS_DIR / f"{name}.yaml").read_text().splitlines()[0].lstrip("# ")
        print(f"{name:24s} {first}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from meddiff.serving.app import run_server

    settings = {"checkpoint": args.checkpoint, **_overrides(args.set)}
    for key, value in (("n_draws", args.n_draws), ("seed", args.seed), ("max_batch_size", args.max_batch_size),
                       ("referral", args.referral and str(Path(args.referral).expanduser().resolve())),
                       ("max_concurrent", args.max_concurrent), ("max_queued", args.max_queued),
                       ("max_explain", args.max_explain), ("request_timeout_s", args.request_timeout),
                       ("token_env", args.token_env)):
        if value is not None:
            settings[key] = value
    run_server(settings, host=args.host, port=args.port)
    return 0


def cmd_loadtest(args: argparse.Namespace) -> int:
    import os

    from meddiff.serving.loadtest import LoadTest, image_bodies, run_loadtest

    token = None
    if args.token_env:
        from meddiff.serving.limits import check_token

        token = check_token(os.environ.get(args.token_env), args.token_env)
    test = LoadTest(url=args.url, clients=args.clients, duration_s=args.duration, bomb_side=args.bomb_side,
                    bomb_every=args.bomb_every)
    report = run_loadtest(test, image_bodies(args.images), token=token)
    print(report.text())
    if args.json:
        Path(args.json).write_text(json.dumps(report.record(), indent=2))
    return 0 if report.server_errors == 0 and report.wrong_answers == 0 else 1


def cmd_dashboard(args: argparse.Namespace) -> int:
    from meddiff.dashboard_server import run_dashboard

    return run_dashboard(args.results, port=args.port, host=args.host)


def cmd_explain(args: argparse.Namespace) -> int:
    from meddiff.config import ExplainConfig
    from meddiff.explain.job import explain_results

    explain_cfg, ray_cfg = _job_configs(args, "explain", ExplainConfig, {
        "select": args.select, "t_start": args.t_start, "steps": args.steps, "guidance": args.guidance,
        "seed": args.seed, "batch_size": args.batch_size})
    data_cfg = _score_data_config(args.data, args.checkpoint) if args.data else None
    if args.ray or args.actors is not None or args.address is not None:
        from meddiff.raycluster import ray_session

        with ray_session(ray_cfg.address):
            run = explain_results(args.checkpoint, args.results, args.out, explain_cfg, data_cfg, ray_cfg=ray_cfg)
    else:
        run = explain_results(args.checkpoint, args.results, args.out, explain_cfg, data_cfg)
    print(f"explained {run['explained']} image(s) ({run['skipped']} already done, {run['errors']} failed) "
          f"in {run['seconds']:.0f}s")
    print(f"index: {run['index']}")
    for page in run["gallery"]:
        print(f"gallery: {page}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from meddiff.config import load_config
    from meddiff.data import build_manifest
    from meddiff.data.summary import format_summary, manifest_summary

    summary = manifest_summary(build_manifest(load_config(args.config, _overrides(args.set)).data))
    print(format_summary(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
        print(f"summary: {args.json}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from meddiff.report.build import build_report

    out = build_report(args.results, args.out, notes=args.notes, n_boot=args.boot, repeats=args.repeats,
                       seed=args.seed, card=args.card)
    print(f"report: {out['report']}")
    if "card" in out:
        print(f"model card: {out['card']['html']}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from meddiff.results.runs import load
    from meddiff.results.selective import calibrate, check, check_markdown

    run = load(args.results)
    if args.check:
        rows = check(run, repeats=args.check, seed=args.seed)
        print(check_markdown(rows))
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
        return 0
    if not args.out:
        from meddiff.errors import ConfigError

        raise ConfigError("--out referral.json is required (or --check R for the re-split table)")
    record = calibrate(run, args.alpha, args.delta, rule=args.rule, split=args.split)
    from meddiff.durable import atomic_write_json

    atomic_write_json(args.out, record)
    cal = record["calibration"]
    print(f"{args.rule}: threshold {record['threshold']} (accept uncertainty <= it; null = refer all), calibration "
          f"coverage {100 * cal['coverage']:.1f} %, risk {100 * cal['risk']:.1f} %, upper bound {100 * cal['ucb']:.1f} % "
          f"on {cal['n']} rows")
    print(f"referral: {args.out}")
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    from meddiff.config import load_config
    from meddiff.cv.run import check_cv, run_cv
    from meddiff.raycluster import ray_session

    cfg = load_config(args.config, _ray_overrides(args, "ray.actors", args.actors))
    check_cv(cfg, args.folds)  # before Ray starts
    out = args.out or str(Path(cfg.output_dir) / f"{cfg.name}-cv{args.folds}")
    with ray_session(cfg.ray.address):
        summary = run_cv(cfg, args.folds, out, n_boot=args.boot, positive=args.positive)
    print(summary["table"])
    print(f"cross-validation: {out}")
    return 0


def cmd_prove(args: argparse.Namespace) -> int:
    import tempfile

    from meddiff.sizing.proof import prove_all, proof_table

    done = []

    def on_result(result) -> None:  # a row (and the JSON so far) as each config finishes
        done.append(result)
        print("\n".join(proof_table([result]).splitlines()[2:]), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps([r.to_dict() for r in done], indent=2))

    with tempfile.TemporaryDirectory(prefix="meddiff-prove-") as tmp:
        results = prove_all(args.configs, args.workdir or tmp, rules=args.rules, precision=args.precision,
                            train=not args.meta_only, log=print, on_result=on_result, isolate=True)
    print("data: synthetic images of each config's size and channels (the configs' data sets are not read)")
    print(proof_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps([r.to_dict() for r in results], indent=2))
    return 0 if all(r.passed for r in results) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meddiff", description="meddiff: conditional diffusion models as medical image "
                                     "classifiers (train, score, explain, report, serve, dashboard, demo)")
    parser.add_argument("--debug", action="store_true", help="on an error, also show the Python traceback")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a diffusion classifier or a baseline (config method) from a YAML config; resumes a run of the same name")
    p.add_argument("--config", required=True, help="YAML file or preset name (see `meddiff presets`)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. train.steps=100")
    p.add_argument("--workers", type=int, help="Ray Train workers (data parallel); 0 trains in this process")
    p.add_argument("--address", help="Ray cluster to use (default: RAY_ADDRESS or a local embedded cluster)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("score", help="score a data split with a checkpoint into a parquet results folder")
    p.add_argument("--checkpoint", required=True, help="bundle folder, its checkpoints/ folder, or the run folder")
    p.add_argument("--data", help="YAML config (its data section) or a MedMNIST .npz; default: the checkpoint's training data")
    p.add_argument("--out", required=True, help="results folder (re-running finishes an interrupted job)")
    p.add_argument("--config", help="YAML whose score and ray sections give the defaults")
    p.add_argument("--n-draws", type=int, help="noise draws per image (N)")
    p.add_argument("--seed", type=int)
    p.add_argument("--split", choices=["train", "val", "test", "all"])
    p.add_argument("--batch-size", type=int)
    p.add_argument("--rule", choices=scoring_rules(), help="rule that fills the pred column (both are always stored)")
    p.add_argument("--limit", type=int, help="score only the first N images")
    p.add_argument("--stopping", choices=tuple(STOPPING_RULES),
                   help="early exit: exact (same predictions as the full vote) or a sequential test at risk --delta")
    p.add_argument("--delta", type=float, help="risk of the sequential stopping rule (default 0.01)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a score value, e.g. score.t_max=0.8")
    p.add_argument("--ray", action="store_true", help="score on a Ray Data actor pool (see --actors, --address)")
    p.add_argument("--actors", type=int, help="number of scoring actors (implies --ray)")
    p.add_argument("--address", help="Ray cluster (implies --ray; default: RAY_ADDRESS or a local embedded cluster)")
    p.add_argument("--json", help="also write the summary metrics to this JSON file")
    p.add_argument("--referral", help="referral.json of `meddiff calibrate`: fill decision accept/refer in every row")
    p.add_argument("--force-new", action="store_true",
                   help="when --out holds results of another checkpoint or settings, write to OUT-2 (OUT-3, ...) instead")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("demo", help="train a tiny model on real data (or phantoms), score the test split, print metrics")
    p.add_argument("--dataset", default="auto", help="auto | pneumonia | breast | isic | phantom")
    p.add_argument("--output-dir", default="runs")
    p.add_argument("--fresh", action="store_true", help="delete an earlier demo run and start over")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("submit", help="run a job entrypoint on a Ray cluster (Ray Jobs API), this checkout as its code")
    p.add_argument("--address", default="http://127.0.0.1:8265", help="the cluster's job server (dashboard) address")
    p.add_argument("--working-dir", default=".", help="folder uploaded as the job's working directory")
    p.add_argument("--no-wait", action="store_true", help="return after submitting instead of following the job")
    p.add_argument("entrypoint", nargs=argparse.REMAINDER, help="-- python jobs/score.py --config ...")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("explain", help="counterfactual explanations (PNGs, parquet index, gallery) of scored images")
    p.add_argument("--checkpoint", required=True, help="diffusion checkpoint: bundle, its checkpoints/ or the run folder")
    p.add_argument("--results", required=True, help="results folder written by `meddiff score` (picks the images)")
    p.add_argument("--out", required=True, help="explanation folder (re-running finishes an interrupted job)")
    p.add_argument("--select", help="uncertain:k | certain:k | extremes:k | errors[:k] | ids:a,b | all "
                                    "(default extremes:8)")
    p.add_argument("--t-start", type=float, help="noise level the image is taken to (paper: 0.5 X-ray, 0.3 skin)")
    p.add_argument("--steps", type=int, help="ancestral sampling steps (paper figures: 256)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale w (paper: 7.5)")
    p.add_argument("--seed", type=int)
    p.add_argument("--batch-size", type=int, help="images per sampler call")
    p.add_argument("--data", help="YAML config (its data section) or a MedMNIST .npz; default: the checkpoint's data")
    p.add_argument("--config", help="YAML whose explain and ray sections give the defaults")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. explain.shard_size=4")
    p.add_argument("--ray", action="store_true", help="explain on a Ray Data actor pool (see --actors, --address)")
    p.add_argument("--actors", type=int, help="number of actors (implies --ray)")
    p.add_argument("--address", help="Ray cluster (implies --ray; default: RAY_ADDRESS or a local embedded cluster)")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("cv", help="grouped stratified k-fold cross-validation: train and score every fold on Ray, pool "
                       "the out-of-fold results, per-fold and pooled figures; resumes fold by fold")
    p.add_argument("config", help="YAML file or preset name (see `meddiff presets`)")
    p.add_argument("--folds", type=int, default=5, help="number of folds K (>= 2)")
    p.add_argument("--out", help="cross-validation folder (default: <output_dir>/<name>-cv<K>); re-running resumes")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. train.steps=100")
    p.add_argument("--actors", type=int, help="Ray Data scoring actors (ray.actors)")
    p.add_argument("--address", help="Ray cluster to use (default: RAY_ADDRESS or a local embedded cluster)")
    p.add_argument("--boot", type=int, default=1000, help="bootstrap resamples for the pooled confidence intervals")
    p.add_argument("--positive", help="the disease class for sensitivity/specificity (default: class 1, as the report)")
    p.set_defaults(func=cmd_cv)

    p = sub.add_parser("report", help="comparison report of results sets: Table 1, N/t ablations, coverage curves")
    p.add_argument("results", nargs="+", help="results folders, optionally named: NAME=DIR")
    p.add_argument("--out", required=True, help="report folder (report.md, *.parquet, *.png)")
    p.add_argument("--notes", help="a markdown file appended to the report (e.g. findings)")
    p.add_argument("--boot", type=int, default=1000, help="bootstrap resamples for the confidence intervals")
    p.add_argument("--repeats", type=int, default=20, help="random draw subsets per N in the N ablation")
    p.add_argument("--card", action="store_true", help="also write model_card.md and a self-contained "
                   "model_card.html (CLAIM 2024 / TRIPOD+AI items answered from provenance)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("calibrate", help="choose the referral threshold (error rate among accepted images <= alpha "
                                         "with probability 1 - delta) on a results set, or --check the guarantee")
    p.add_argument("results", help="results folder (a val split, or cross-validation out-of-fold rows)")
    p.add_argument("--alpha", type=float, default=0.1, help="error rate among accepted images to control")
    p.add_argument("--delta", type=float, default=0.1, help="chance the guarantee fails (over the calibration set)")
    p.add_argument("--rule", choices=tuple(REFERRAL_RULES), default="ltt", help="ltt or ltt-multistart (certified) or naive (no guarantee)")
    p.add_argument("--split", help="calibrate on this split's rows only (e.g. val)")
    p.add_argument("--out", help="referral.json to write (for `meddiff score/serve --referral`)")
    p.add_argument("--check", type=int, metavar="R", help="instead: R group-aware re-splits, alpha 0.05 and 0.10, "
                                                            "delta 0.1 (LTT vs naive, conformal sets)")
    p.add_argument("--json", help="with --check: also write the table as JSON")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("bench", help="benchmark the paper's loop vs the engine, early exit and Ray scoring (JSON + markdown)")
    p.add_argument("--checkpoint", help="diffusion checkpoint (required unless --scale)")
    p.add_argument("--out", required=True, help="folder for bench.json and bench.md")
    p.add_argument("--images", type=int, default=120, help="test images (class-balanced subset)")
    p.add_argument("--n-draws", type=int, default=501)
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (reference) / in flight (engine)")
    p.add_argument("--chunk", type=int, default=8, help="draws per image between early-exit checks")
    p.add_argument("--deltas", type=float, nargs="*", default=[0.05, 0.01], help="risks of the sequential rule")
    p.add_argument("--skip", nargs="*", default=[], metavar="VARIANT",
                   help="variants to leave out, by name (e.g. 'engine, antithetic noise' exact)")
    p.add_argument("--decision-z", type=float, nargs="*", default=[2.0],
                   help="guards of the futility rule's accept / refer decision to measure (score.decision_z)")
    p.add_argument("--ray-actors", type=int, nargs="*", default=[1, 2], help="Ray pool sizes to compare (none: skip)")
    p.add_argument("--ray-n-draws", type=int, default=51, help="N for the Ray vs in-process comparison")
    p.add_argument("--ray-images", type=int, default=0,
                   help="images for the Ray comparison (0: the same as --images); a longer job amortises actor start-up")
    p.add_argument("--scale", action="store_true", help="instead: Ray throughput and driver memory, 1k vs 10k images")
    p.add_argument("--scale-sizes", type=int, nargs="*", default=[1000, 10000])
    p.add_argument("--kernels", action="store_true",
                   help="instead: fp32 vs bf16 autocast, channels-last and torch.compile for the checkpoint's denoiser")
    p.add_argument("--data-path", action="store_true",
                   help="instead: decode + resize + Haar DWT images/s per core at 256 px for JPEG, PNG and DICOM (--images "
                        "per format; in process and on Ray pools of --ray-actors one-CPU actors), no checkpoint")
    p.set_defaults(func=cmd_bench)

    from meddiff.sizing.hardware import GPUS
    from meddiff.sizing.plan import DEFAULT_MFU

    p = sub.add_parser("plan", help="capacity plan of a config on GPUs: memory, largest batch, training and scoring time "
                                    "(full size, measured on the meta device)")
    p.add_argument("config", help="config file or preset name")
    p.add_argument("--gpus", type=int, default=1, help="GPUs the run gets")
    p.add_argument("--gpu", default="a100", choices=sorted(GPUS))
    p.add_argument("--cohort", type=int, default=0, help="images to score: GPU-hours for them")
    p.add_argument("--bench", help="a `meddiff bench` bench.json: early-exit rows from its NFE reductions")
    p.add_argument("--mfu", type=float, default=DEFAULT_MFU,
                   help="model FLOP utilisation assumed (default and why: meddiff.sizing.plan)")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--decode-rate", type=float, help="images decoded per second per CPU core")
    rate.add_argument("--datapath", help="a `meddiff bench --data-path` datapath.json: its slowest format's rate per core")
    p.add_argument("--json", help="write the plan as JSON here")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("data", help="build a config's manifest and print rows per split x class, groups, metadata, leakage checks")
    p.add_argument("config", help="YAML config (its data section is used)")
    p.add_argument("--json", metavar="FILE", help="also write the summary as JSON")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. data.leakage_check=exact")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("presets", help="list the built-in configs")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("serve", help="serve a checkpoint over HTTP with Ray Serve (POST /predict, GET /healthz, /model)")
    p.add_argument("--checkpoint", required=True, help="bundle folder, its checkpoints/ folder, or the run folder")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--n-draws", type=int, help="noise draws per image (default: the checkpoint's score config)")
    p.add_argument("--seed", type=int, help="run seed (default: the checkpoint's score config)")
    p.add_argument("--max-batch-size", type=int, help="most requests batched into one model call (default 8)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="another serving setting, e.g. max_upload_bytes=5000000 or explain_steps=50 "
                        "(see meddiff.serving.classifier.ServeSettings)")
    p.add_argument("--referral", help="referral.json of `meddiff calibrate`: answers carry decision accept/refer")
    p.add_argument("--max-concurrent", type=int, help="requests decoded and scored at once per replica (default 2)")
    p.add_argument("--max-queued", type=int, help="requests waiting for that; beyond them 429 + Retry-After (default 8)")
    p.add_argument("--max-explain", type=int, help="explanations at once per replica (default 1, queue explain_queue=2)")
    p.add_argument("--request-timeout", type=float, help="seconds of work per request before a 504 (default 60)")
    p.add_argument("--token-env", metavar="NAME", help="require 'Authorization: Bearer <token>' on every route but "
                                                       "/healthz, the token read from environment variable NAME")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("loadtest", help="hammer a running endpoint with valid images and in-limit decompression bombs")
    p.add_argument("url", help="the endpoint's base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--images", required=True, help="a folder of images or a manifest CSV (column path) to send")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    p.add_argument("--bomb-side", type=int, default=6000, help="side of the single-colour PNG bombs (default 6000)")
    p.add_argument("--bomb-every", type=int, default=4, help="every k-th request is a bomb (default 4; 0: none)")
    p.add_argument("--token-env", metavar="NAME", help="send the bearer token of environment variable NAME")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    p.set_defaults(func=cmd_loadtest)

    p = sub.add_parser("prove", help="full-size proofs of configs: build, one CPU training step, bundle round trip, "
                       "scoring with every stopping rule; prints a table")
    p.add_argument("configs", nargs="+", help="YAML configs (e.g. jobs/configs/*.yaml)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--rules", nargs="+", choices=tuple(STOPPING_RULES), help="stopping rules to score with (default: all)")
    p.add_argument("--precision", choices=("fp32", "bf16"), help="precision of the training step (default: the config's)")
    p.add_argument("--meta-only", action="store_true", help="only build the networks on the meta device")
    p.add_argument("--workdir", help="keep the synthetic data, bundles and results here (default: a temporary folder)")
    p.set_defaults(func=cmd_prove)

    p = sub.add_parser("dashboard", help="browse results sets and explanations under a folder in a Streamlit app")
    p.add_argument("--results", required=True, help="results root: the app reads only results sets under this folder")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    p.set_defaults(func=cmd_dashboard)
    return parser


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Run one command. Every error ends in one line on stderr: exit code 2 for a meddiff error (bad input, config,
    data, checkpoint, results folder) or an OS error on a user path, 130 when interrupted, 1 for anything else (a bug);
    ``--debug`` (before the command) shows the traceback as well."""
    args = build_parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    try:
        return args.func(args)
    except MeddiffError as exc:
        _report(args, f"error: {_one_line(exc)}", debug)
        return 2
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) and str(exc.filename) not in str(exc) else ""
        _report(args, f"error: {_one_line(exc)}{where}", debug)
        return 2
    except KeyboardInterrupt:
        _report(args, "interrupted; re-run the same command to resume", debug)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        _report(args, f"internal error ({type(exc).__name__}: {_one_line(exc)}); this is a bug: please report it with "
                      f"the output of `meddiff --debug {args.command} ...`", debug)
        return 1


def _report(args: argparse.Namespace, line: str, debug: bool) -> None:
    if debug:
        import traceback

        traceback.print_exc(file=sys.stderr)
    print(f"meddiff {args.command}: {line}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
