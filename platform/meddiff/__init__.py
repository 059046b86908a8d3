"""meddiff: conditional diffusion models as medical image classifiers (training, scoring, uncertainty, counterfactuals)."""

__version__ = "0.1.0"
