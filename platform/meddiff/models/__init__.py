"""Denoisers picked by name: ``create_denoiser(ModelConfig, ...)``; see ``registry``."""

from meddiff.models.registry import MODELS, create_denoiser, count_parameters

__all__ = ["MODELS", "create_denoiser", "count_parameters"]
