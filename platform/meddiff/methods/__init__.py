"""Classifier methods, one package each (``diffusion``: the paper's classifier; ``baseline``: the timm baselines;
``sd``, ``mediffusion``, ``didicm``, ``dcube``), registered in ``meddiff.method_registry`` by the config ``method`` / checkpoint
``kind``. ``predictor`` holds the interface every method's predictor implements."""

from meddiff.method_registry import (METHODS, Method, discover, get_method, load_predictor, predictor_class, register,
                                      train_function)

discover()

__all__ = ["METHODS", "Method", "discover", "get_method", "load_predictor", "predictor_class", "register",
           "train_function"]
