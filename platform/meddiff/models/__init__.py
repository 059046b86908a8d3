"""Models picked by name: denoisers (``create_denoiser(ModelConfig, ...)``, see ``registry``) and discriminative
baselines (``create_baseline(ModelConfig, ...)``, see ``baselines``)."""

from meddiff.models.baselines import BASELINES, create_baseline
from meddiff.models.registry import MODELS, create_denoiser, count_parameters

__all__ = ["BASELINES", "MODELS", "create_baseline", "create_denoiser", "count_parameters"]
