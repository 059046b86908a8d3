"""``BaselinePredictor``: scores images with a discriminative baseline (softmax, argmax, softmax entropy)."""

from __future__ import annotations

from meddiff.methods.predictor import NetworkPredictor
from meddiff.models.baseline_model import load_baseline_model


class BaselinePredictor(NetworkPredictor):
    """The predictor of ``kind: baseline`` bundles: one network evaluation per image (``nfe`` 1); the vote columns,
    ``n_draws`` and ``rule`` stay null."""

    method = "baseline"
    _load = staticmethod(load_baseline_model)
