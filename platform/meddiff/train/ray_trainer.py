"""Ray Train: the diffusion and baseline loops in data-parallel ``TorchTrainer`` workers.

The loops are unchanged; ``RayTrainContext`` gives them the worker's rank, world size and device, wraps the model in DDP
(gloo on CPU, nccl on GPU) when there is more than one worker, and reports every bundle through ``ray.train.report``.
Ray Train persists it to ``<output_dir>/<name>/step_XXXXXXX/`` (shared storage such as NFS for multi-node runs), keeps
``train.keep_checkpoints`` of them, restarts failed workers up to ``ray.max_failures`` times, and a re-run with the
same name resumes from the newest checkpoint (``ray.train.get_checkpoint``). EMA, progress lines, metrics.jsonl and the
loss plot come from rank 0.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from meddiff.config import ExperimentConfig, config_from_json, to_dict
from meddiff.errors import CheckpointError, MeddiffError
from meddiff.bundle import list_bundles, resumable_bundle, step_of
from meddiff.train.context import LocalContext


class RayTrainContext(LocalContext):
    """LocalContext for a Ray Train worker."""

    def __init__(self) -> None:
        import ray.train

        ctx = ray.train.get_context()
        super().__init__(rank=ctx.get_world_rank(), world_size=ctx.get_world_size())
        self._scratch = Path(tempfile.mkdtemp(prefix="meddiff-bundles-"))

    def device(self, name: str) -> torch.device:
        import ray.train.torch

        return ray.train.torch.get_device()

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        if self.world_size == 1:
            return model
        return ray.train.torch.prepare_model(model, move_to_device=False)

    def checkpoint_dir(self, run_dir: Path) -> Path:
        return self._scratch  # bundles are written here, then persisted by ray.train.report

    def resume_bundle(self, run_dir: Path) -> Path | None:
        """Ray's latest registered checkpoint, or a newer whole bundle persisted in the run folder: when a worker dies
        while the group reports a checkpoint, Ray may have written it to storage without registering it, and the
        restarted group would otherwise start again from the older one (or from scratch)."""
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        ray_step = -1
        if checkpoint is not None:
            ray_step = step_of(Path(checkpoint.path).name)
        # newest first, stopping at the first whole one: each check hashes a bundle's files
        newer = next((b for b in reversed(list_bundles(run_dir)) if step_of(b.name) > ray_step and resumable_bundle(b)),
                     None)
        if newer is not None:
            if self.is_main:
                self.log(f"[train] Ray Train's latest registered checkpoint is "
                         f"{Path(checkpoint.path).name if checkpoint else 'none'}; resuming from the newer persisted "
                         f"bundle {newer.name}")
            return newer
        if checkpoint is None:
            return None
        return Path(checkpoint.to_directory(tempfile.mkdtemp(prefix="meddiff-resume-")))

    def report(self, metrics: dict[str, Any], bundle: Path | None) -> None:
        import ray.train

        if bundle is None:
            ray.train.report(metrics)
            return
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(bundle)),
                         checkpoint_dir_name=bundle.name)
        shutil.rmtree(bundle, ignore_errors=True)


def _train_worker(loop_config: dict[str, Any]) -> None:
    cfg = config_from_json(loop_config["config"])
    if not torch.cuda.is_available() and cfg.train.num_threads == 0:
        torch.set_num_threads(max(1, int(cfg.ray.cpus_per_worker)))  # one thread per CPU the worker reserved
    _loop_for(cfg)(cfg, RayTrainContext())


def _loop_for(cfg: ExperimentConfig):
    from meddiff.method_registry import train_function

    return train_function(cfg.method)


def storage_dir(cfg: ExperimentConfig) -> Path:
    return Path(cfg.output_dir).expanduser().resolve()


def fit(cfg: ExperimentConfig) -> Path:
    """Train ``cfg`` with Ray Train (``cfg.ray.num_workers`` workers); returns the newest persisted bundle.

    Ray must already be initialised (``meddiff.raycluster.ensure_ray``).
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from meddiff.raycluster import cluster_has_gpus

    rc = cfg.ray
    use_gpu = cluster_has_gpus() if rc.use_gpu is None else rc.use_gpu
    resources = {"CPU": rc.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = rc.gpus_per_worker
    # the run folder is the storage folder: config.json / metrics.jsonl / loss.png beside Ray's step_* checkpoints
    cfg_abs = config_from_json({**to_dict(cfg), "output_dir": str(storage_dir(cfg))})
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"config": to_dict(cfg_abs)},
        scaling_config=ScalingConfig(num_workers=rc.num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=cfg.name,
            storage_path=str(storage_dir(cfg)),
            failure_config=FailureConfig(max_failures=rc.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints or None),
        ),
    )
    try:
        result = trainer.fit()
    except Exception as exc:  # Ray Train wraps a worker's exception; a meddiff error (bad data, config) is re-raised as is
        inner = worker_error(exc)
        if inner is not None:
            raise inner from exc
        raise
    if result.checkpoint is None:
        raise CheckpointError(f"Ray Train run {cfg.name} finished without a checkpoint under {storage_dir(cfg)}")
    return Path(result.checkpoint.path)


def worker_error(exc: BaseException) -> MeddiffError | None:
    """The meddiff error (DataError, ConfigError, ...) a Ray Train worker raised, found inside Ray's wrappers
    (``WorkerGroupError.worker_failures``, ``.cause``, ``__cause__``), or None."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, MeddiffError):
            return e
        todo.extend(getattr(e, "worker_failures", {}).values())
        todo.extend(x for x in (getattr(e, "cause", None), getattr(e, "controller_failure", None), e.__cause__,
                                e.__context__) if isinstance(x, BaseException))
    return None


def train(cfg: ExperimentConfig) -> Path:
    """Train in this process (``ray.num_workers == 0``) or with Ray Train (> 0, starting Ray if needed)."""
    if cfg.ray.num_workers == 0:
        return _loop_for(cfg)(cfg)
    from meddiff.raycluster import ensure_ray

    ensure_ray(cfg.ray.address)
    return fit(cfg)
