"""Mediffusion-style joint diffusion classifier (Mediffusion, arXiv 2411.09434): one UNet for denoising and a
classifier head, trained jointly and semi-supervised.

Modules: ``net`` (the joint UNet), ``train`` (options, model, joint loss, training loop), ``predictor`` (the head on
the clean image), ``guidance`` (counterfactuals by classifier guidance with the head's gradient).
"""

from meddiff.method_registry import Method, register

register(Method("mediffusion", f"{__name__}.train:train_mediffusion", f"{__name__}.predictor:MediffusionPredictor",
                votes=False,
                description="Mediffusion: one UNet for denoising and a classifier head, semi-supervised joint training",
                counterfactual=f"{__name__}.guidance:load_counterfactuals",
                short="Mediffusion",
                sizing=f"{__name__}.sizing:full_size"))
