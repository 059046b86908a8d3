"""Exponential moving average of model weights (paper: beta 0.999, warm-up 50 steps, update every 5 steps).

The EMA copy starts as the weights at step ``warmup`` and is then updated every ``every`` optimiser steps with
beta_k = min(beta, (1 + k) / (10 + k)), k = number of EMA updates so far. The ramp keeps short CPU runs usable (a fixed
0.999 would still mostly hold the step-50 weights after a few hundred steps) and is the usual EMA warm-up; beta_k reaches
0.999 after (10 beta - 1) / (1 - beta) ~ 9,000 updates.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Holds the averaged copy of ``model``; ``update(step)`` is called after every optimiser step."""

    def __init__(self, model: nn.Module, beta: float = 0.999, warmup: int = 50, every: int = 5) -> None:
        self.beta = beta
        self.warmup = warmup
        self.every = max(1, every)
        self.num_updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def current_beta(self) -> float:
        k = self.num_updates
        return min(self.beta, (1.0 + k) / (10.0 + k))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """``step`` is the number of optimiser steps taken so far (1-based)."""
        if step < self.warmup:
            return
        if self.num_updates == 0:  # first call at or after the warm-up: start from the current weights
            self._copy_from(model)
            self.num_updates = 1
            return
        if step % self.every:
            return
        beta = self.current_beta()
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.lerp_(p.detach().to(ema_p.dtype), 1.0 - beta)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)
        self.num_updates += 1

    def inference_model(self, model: nn.Module) -> nn.Module:
        """The weights to save for inference: the EMA once it has started, else the raw model (runs shorter than warm-up)."""
        return self.model if self.num_updates else model

    @torch.no_grad()
    def _copy_from(self, model: nn.Module) -> None:
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.copy_(p.detach())
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)

    def state(self) -> dict:
        return {"num_updates": self.num_updates}

    def load_state(self, state: dict) -> None:
        self.num_updates = int(state["num_updates"])
