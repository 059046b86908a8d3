"""Classifier methods, one package each (``diffusion``: the paper's classifier; ``baseline``: the timm baselines;
``sd``, ``mediffusion``, ``didicm``, ``dcube``), registered in ``meddiff.method_registry`` by the config ``method`` /
checkpoint ``kind``. ``predictor`` holds the interface every method's predictor implements, ``explainer`` the one
of methods with counterfactuals. Importing this package registers every method (no torch is imported)."""

from __future__ import annotations

from pathlib import Path

from meddiff.errors import CheckpointError
from meddiff.method_registry import (METHODS, Method, discover, get_method, predictor_class, register, resolve,
                                     train_function)

discover()


def load_predictor(path: str | Path, cfg):
    """The predictor for the checkpoint at ``path`` (bundle, checkpoints/ or run folder), chosen by its metadata kind
    (``cfg``: a ``meddiff.config.ScoreConfig``)."""
    from meddiff.bundle import read_bundle

    kind = read_bundle(path).metadata.get("kind")
    return predictor_class(kind, str(path)).from_checkpoint(path, cfg)


def counterfactual_loader(kind: str | None, where: str):
    """The ``load_counterfactuals`` function of the method that wrote a checkpoint of ``kind`` (its registry entry,
    ``meddiff.methods.explainer``); a method without counterfactuals is refused with its reason."""
    methods = discover()
    if kind not in methods:
        raise CheckpointError(f"{where}: checkpoint kind {kind!r} is not a registered method; known: {sorted(methods)}")
    method = methods[kind]
    if method.counterfactual is None:
        able = sorted(m.name for m in methods.values() if m.counterfactual)
        raise CheckpointError(f"{where} is a {kind!r} checkpoint and {kind} has no counterfactuals"
                              f"{': ' + method.counterfactual_note if method.counterfactual_note else ''}; methods "
                              f"with counterfactuals: {', '.join(able)}")
    return resolve(method.counterfactual)


__all__ = ["METHODS", "Method", "counterfactual_loader", "discover", "get_method", "load_predictor", "predictor_class", "register", "resolve",
           "train_function"]
