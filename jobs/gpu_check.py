"""GPU acceptance run: train the paper's UNet from a production config for a few hundred steps, score K images with
the paper's loop and the engine's stopping rules in bf16 and fp32, check that bf16 decides as fp32 does, write JSON.

    meddiff submit --address http://HEAD:8265 -- \
        python jobs/gpu_check.py --ray --out /mnt/cluster_storage/gpu_check.json
    python jobs/gpu_check.py --out gpu_check.json            # on a GPU node directly (or a tiny CPU run without CUDA)

Exit code 0 when every check passes, 1 when one fails, 2 on a usage error. All logic lives in meddiff
(``meddiff.bench.acceptance``; ``--ray`` runs it as a Ray task holding one GPU when the cluster has one).
"""

import argparse
import sys

from meddiff.bench.acceptance import DEFAULT_CONFIG, AcceptanceConfig, print_summary, run_acceptance, write_result
from meddiff.config import parse_override
from meddiff.errors import MeddiffError


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="jobs/gpu_check.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=DEFAULT_CONFIG, help="a production config with method: diffusion")
    p.add_argument("--mode", default="auto", choices=("auto", "gpu", "cpu"), help="auto: gpu when CUDA is present")
    p.add_argument("--steps", type=int, default=0, help="training steps (0: 300 on GPU, 4 on CPU)")
    p.add_argument("--data", default="synthetic", choices=("synthetic", "config"),
                   help="synthetic phantoms at the config's image size, or the config's data source")
    p.add_argument("--data-root", default="", help="the config's data source with data.params.root here (implies "
                                                   "--data config), e.g. the CheXpert-v1.0-small folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--images", type=int, default=0, help="K images scored (0: 64 on GPU, 4 on CPU)")
    p.add_argument("--n-draws", type=int, default=0, help="N (0: the config's score.n_draws on GPU, 5 on CPU)")
    p.add_argument("--train-batch-size", type=int, default=0, help="0: the config's train.batch_size (8 on CPU)")
    p.add_argument("--slots", type=int, default=0, help="images per batch (0: the config's score.batch_size; 4 on CPU)")
    p.add_argument("--max-batch", type=int, default=0, help="engine denoiser inputs per forward (0: 512 GPU, 256 CPU)")
    p.add_argument("--rules", nargs="*", default=["mixture", "futility"], help="early-exit rules run besides fixed N")
    p.add_argument("--delta", type=float, default=0.01, help="risk of the early-exit rules")
    p.add_argument("--compile", action="store_true", help="torch.compile the engine's denoiser")
    p.add_argument("--min-agreement", type=float, default=0.9, help="smallest bf16-vs-fp32 agreement that passes")
    p.add_argument("--work-dir", default="", help="keep the training run here (default: a temporary folder)")
    p.add_argument("--out", default="gpu_check.json", help="the JSON result")
    p.add_argument("--ray", action="store_true", help="run as a Ray task (one GPU when the cluster has GPUs)")
    p.add_argument("--address", default="", help="with --ray: the cluster (default: the job's, else a local one)")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    try:
        acc = AcceptanceConfig(config=args.config, mode=args.mode, steps=args.steps, data=args.data,
                               data_root=args.data_root, overrides=dict(parse_override(p) for p in args.set),
                               images=args.images, n_draws=args.n_draws, train_batch_size=args.train_batch_size,
                               slots=args.slots, max_batch=args.max_batch, rules=tuple(args.rules),
                               delta=args.delta, compile=args.compile,
                               min_agreement=args.min_agreement, work_dir=args.work_dir)
        if args.ray:
            from meddiff.bench.ray_acceptance import run_acceptance_on_ray

            result = run_acceptance_on_ray(acc, args.address)
        else:
            result = run_acceptance(acc)
    except MeddiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_summary(result, write_result(result, args.out))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
