"""The counterfactual interface every method with counterfactuals implements (``meddiff explain`` runs it).

A method registers ``counterfactual="module:load_counterfactuals"``; that function has the signature
``load_counterfactuals(path, cfg: ExplainConfig, device: torch.device, model=None) -> Counterfactuals`` and binds the
loaded model (``model``: one already loaded, e.g. the endpoint's predictor's ``generative_model``) to its sampler. The sampler is called as ``sampler(model, pixels [B, C, H, W] in [-1, 1], ids)`` and returns a
``meddiff.diffusion.counterfactual.CounterfactualResult`` (reconstructions under every class, errors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from meddiff.diffusion.counterfactual import CounterfactualResult


@dataclass
class Counterfactuals:
    """A loaded model (``class_names``, ``model_id``, ``image_size``, ``channels``, ``num_classes``) and its sampler."""

    model: Any
    sampler: Callable[..., CounterfactualResult]

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.model.class_names)

    @property
    def model_id(self) -> str:
        return self.model.model_id

    @property
    def image_size(self) -> int:
        return self.model.image_size

    @property
    def channels(self) -> int:
        return self.model.channels

    @property
    def num_classes(self) -> int:
        return len(self.model.class_names)

    def __call__(self, pixels: torch.Tensor, ids: Sequence[str]) -> CounterfactualResult:
        return self.sampler(self.model, pixels, ids)
