"""Where a training loop runs: this process (``LocalContext``) or a Ray Train worker (``ray_trainer.RayTrainContext``).

The loops (diffusion, baseline) only talk to this interface: rank and world size, the device, how to wrap the model
(DDP under Ray Train), where bundles go, which bundle to resume from, and how to report a checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from meddiff.device import resolve_device
from meddiff.bundle import list_bundles


@dataclass
class LocalContext:
    """Single-process training: bundles go to ``<run_dir>/checkpoints``; resume from the newest one there."""

    rank: int = 0
    world_size: int = 1
    log: Callable[[str], None] = field(default=lambda line: print(line, flush=True))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, name: str) -> torch.device:
        return resolve_device(name)

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def checkpoint_dir(self, run_dir: Path) -> Path:
        return Path(run_dir) / "checkpoints"

    def resume_bundle(self, run_dir: Path) -> Path | None:
        bundles = list_bundles(self.checkpoint_dir(run_dir))
        return bundles[-1] if bundles else None

    def report(self, metrics: dict[str, Any], bundle: Path | None) -> None:
        """Called by every rank at every checkpoint step (a barrier under Ray Train); ``bundle`` only on rank 0."""
