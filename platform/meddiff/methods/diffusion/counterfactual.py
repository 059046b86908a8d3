"""Counterfactuals of the paper's classifier: the ancestral sampler with classifier-free guidance
(``meddiff.diffusion.counterfactual``; Favero et al. 2025, section 4.3), run by ``meddiff explain``."""

from __future__ import annotations

from pathlib import Path

import torch

from meddiff.config import ExplainConfig
from meddiff.diffusion.counterfactual import CounterfactualSampler
from meddiff.diffusion.model import DiffusionModel, load_diffusion_model
from meddiff.methods.explainer import Counterfactuals


def load_counterfactuals(path: str | Path, cfg: ExplainConfig, device: torch.device,
                         model: DiffusionModel | None = None) -> Counterfactuals:
    """The diffusion checkpoint at ``path`` (or its already loaded ``model``) with the CFG sampler of ``cfg``
    (guidance = w)."""
    model = model if model is not None else load_diffusion_model(path, device)
    sampler = CounterfactualSampler(t_start=cfg.t_start, steps=cfg.steps, guidance=cfg.guidance, seed=cfg.seed,
                                    max_batch=max(64, 2 * cfg.batch_size * model.num_classes))
    return Counterfactuals(model, sampler)
