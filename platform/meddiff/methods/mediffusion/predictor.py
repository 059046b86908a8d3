"""``MediffusionPredictor``: scores images with the joint model's classifier head (``meddiff.methods.mediffusion.train``)."""

from __future__ import annotations

import torch

from meddiff.config import ScoreConfig
from meddiff.methods.predictor import NetworkPredictor
from meddiff.methods.mediffusion.train import KIND, HeadClassifier, MediffusionModel, load_mediffusion_model
from meddiff.models.baseline_model import BaselineModel


class MediffusionPredictor(NetworkPredictor):
    """Scores images with the joint model's head on the clean image: softmax, argmax, normalised softmax entropy.

    One (encoder) evaluation per image (``nfe`` 1); the vote columns, ``n_draws`` and ``rule`` stay null. The joint
    model (for counterfactuals) is ``self.joint``.
    """

    method = KIND

    def __init__(self, model: MediffusionModel, cfg: ScoreConfig, device: torch.device | None = None) -> None:
        self.joint = model
        view = BaselineModel(HeadClassifier(model), model.model_cfg, model.class_names, model.image_size,
                             model.channels, model.model_id, model.metadata)
        super().__init__(view, cfg, device)

    _load = staticmethod(load_mediffusion_model)

    @property
    def generative_model(self) -> MediffusionModel:
        return self.joint  # Predictor.from_checkpoint: cls(_load(path, device), cfg, device)
