"""Mediffusion-style joint diffusion classifier (Mediffusion, arXiv 2411.09434): one UNet for denoising and a
classifier head, trained jointly and semi-supervised.

Modules: ``net`` (the joint UNet), ``train`` (options, model, joint loss, training loop), ``predictor`` (the head on
the clean image), ``guidance`` (counterfactuals by classifier guidance with the head's gradient).
"""

from meddiff.method_registry import Method, register

register(Method(
    name="mediffusion",
    train="meddiff.methods.mediffusion.train:train_mediffusion",
    predictor="meddiff.methods.mediffusion.predictor:MediffusionPredictor",
    votes=False,
    description="Mediffusion: one UNet for denoising and a classifier head, semi-supervised joint training",
    counterfactual="meddiff.methods.mediffusion.guidance:load_counterfactuals",
))
