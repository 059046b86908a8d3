"""Classifier methods, one package each (``diffusion``: the paper's classifier; ``baseline``: the timm baselines;
``sd``, ``mediffusion``, ``didicm``, ``dcube``), registered in ``meddiff.method_registry`` by the config ``method`` /
checkpoint ``kind``. ``predictor`` holds the interface every method's predictor implements, ``explainer`` the one
of methods with counterfactuals. Importing this package registers every method (no torch is imported)."""

from __future__ import annotations

from pathlib import Path

from meddiff.method_registry import (METHODS, Method, discover, get_method, predictor_class, register, resolve,
                                     train_function)

discover()


def load_predictor(path: str | Path, cfg):
    """The predictor for the checkpoint at ``path`` (bundle, checkpoints/ or run folder), chosen by its metadata kind
    (``cfg``: a ``meddiff.config.ScoreConfig``)."""
    from meddiff.bundle import read_bundle

    kind = read_bundle(path).metadata.get("kind")
    return predictor_class(kind, str(path)).from_checkpoint(path, cfg)


__all__ = ["METHODS", "Method", "discover", "get_method", "load_predictor", "predictor_class", "register", "resolve",
           "train_function"]
