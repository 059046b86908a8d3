"""Discriminative baselines (the paper's Table 1: timm CNNs and ViTs with the paper's augmentations).

Modules: ``train`` (cross-entropy on the shared loop ``meddiff.train.loop``), ``predictor`` (softmax scoring); the
networks come from ``meddiff.models.baselines``. No counterfactuals: a discriminative network cannot re-generate an image.
"""

from meddiff.method_registry import Method, register

register(Method("baseline", f"{__name__}.train:train_baseline", f"{__name__}.predictor:BaselinePredictor", votes=False,
                description="discriminative timm classifier with the paper's augmentations",
                counterfactual_note="a discriminative classifier cannot re-generate an image under another class",
                sizing=f"{__name__}.sizing:full_size"))
