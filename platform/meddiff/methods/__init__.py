"""Classifier methods: the registry that maps a config ``method`` / checkpoint ``kind`` to its training loop and
predictor (``registry``), and the modules of the methods beyond the paper's classifier and the timm baselines."""

from meddiff.methods.registry import METHODS, Method, get_method, predictor_class, train_function

__all__ = ["METHODS", "Method", "get_method", "predictor_class", "train_function"]
