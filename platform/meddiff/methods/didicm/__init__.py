"""DiDiCM-style classifier (Belhasin et al., "Advancing Image Classification with Discrete Diffusion Classification
Modeling"): a discrete diffusion over the class label given the image.

Modules: ``process`` (the label forward / reverse kernels), ``net`` (DiDiRN), ``train`` (options, model, loss, training
loop), ``predictor`` (class probabilities or label chains).
"""

from meddiff.method_registry import Method, register

register(Method("didicm", f"{__name__}.train:train_didicm", f"{__name__}.predictor:DiDiCMPredictor", votes=False,
                description="DiDiCM: discrete diffusion over the class label given the image (probabilities or "
                            "label chains)",
                counterfactual_note="its diffusion runs over the label, not the image: it cannot re-generate an image",
                short="DiDiCM",
                sizing=f"{__name__}.sizing:full_size"))
