"""The meddiff command line: ``meddiff train | score | demo | presets``.

A thin layer: every command parses its arguments and calls one library function.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from meddiff.errors import MeddiffError


def _overrides(pairs: list[str] | None) -> dict:
    from meddiff.config import parse_override

    return dict(parse_override(p) for p in pairs or [])


def cmd_train(args: argparse.Namespace) -> int:
    from meddiff.config import load_config
    from meddiff.train.loop import train_diffusion

    cfg = load_config(args.config, _overrides(args.set))
    bundle = train_diffusion(cfg)
    print(f"checkpoint: {bundle}")
    return 0


def _score_data_config(data_arg: str | None, checkpoint: str):
    from meddiff.config import DataConfig, config_from_json, load_config
    from meddiff.train.checkpoint import read_bundle

    if data_arg is None:
        return config_from_json(read_bundle(checkpoint).metadata["config"]).data
    if data_arg.endswith(".npz"):
        return DataConfig(source="medmnist", params={"path": data_arg})
    return load_config(data_arg).data


def cmd_score(args: argparse.Namespace) -> int:
    from meddiff.config import ScoreConfig, apply_overrides, from_dict, load_config, to_dict
    from meddiff.metrics import format_summary
    from meddiff.scoring.local import score_checkpoint

    base = to_dict(load_config(args.config).score) if args.config else {}
    flags = {k: v for k, v in {"n_draws": args.n_draws, "seed": args.seed, "split": args.split,
                               "batch_size": args.batch_size, "rule": args.rule, "limit": args.limit}.items()
             if v is not None}
    raw = apply_overrides({"score": {**base, **flags}}, _overrides(args.set))
    score_cfg = from_dict(ScoreConfig, raw["score"], "score")
    data_cfg = _score_data_config(args.data, args.checkpoint)
    summary = score_checkpoint(args.checkpoint, data_cfg, score_cfg, args.out)
    print(format_summary(summary))
    print(f"results: {args.out}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from meddiff.demo import run_demo

    run_demo(dataset=args.dataset, output_dir=args.output_dir, overrides=_overrides(args.set), fresh=args.fresh)
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from meddiff.config import PRESETS_DIR, preset_names

    for name in preset_names():
        first = (PRESETS_DIR / f"{name}.yaml").read_text().splitlines()[0].lstrip("# ")
        print(f"{name:24s} {first}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meddiff", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a diffusion classifier from a YAML config (resumes a run of the same name)")
    p.add_argument("--config", required=True, help="YAML file or preset name (see `meddiff presets`)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. train.steps=100")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("score", help="score a data split with a checkpoint into a parquet results folder")
    p.add_argument("--checkpoint", required=True, help="bundle folder, its checkpoints/ folder, or the run folder")
    p.add_argument("--data", help="YAML config (its data section) or a MedMNIST .npz; default: the checkpoint's training data")
    p.add_argument("--out", required=True, help="results folder (re-running finishes an interrupted job)")
    p.add_argument("--config", help="YAML whose score section gives the defaults")
    p.add_argument("--n-draws", type=int, help="noise draws per image (N)")
    p.add_argument("--seed", type=int)
    p.add_argument("--split", choices=["train", "val", "test", "all"])
    p.add_argument("--batch-size", type=int)
    p.add_argument("--rule", choices=["vote", "average"], help="rule that fills the pred column (both are always stored)")
    p.add_argument("--limit", type=int, help="score only the first N images")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a score value, e.g. score.t_max=0.8")
    p.add_argument("--json", help="also write the summary metrics to this JSON file")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("demo", help="train a tiny model on real data (or phantoms), score the test split, print metrics")
    p.add_argument("--dataset", default="auto", help="auto | pneumonia | breast | isic | phantom")
    p.add_argument("--output-dir", default="runs")
    p.add_argument("--fresh", action="store_true", help="delete an earlier demo run and start over")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("presets", help="list the built-in configs")
    p.set_defaults(func=cmd_presets)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MeddiffError as exc:
        print(f"meddiff {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"meddiff {args.command}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
