"""The paper's classifier (Favero et al. 2025): a class-conditional diffusion model that classifies an image by noising
it at random t, denoising it under every class and voting for the class that reconstructs it best.

Modules: ``train`` (the training step on the shared loop ``meddiff.train.loop``), ``predictor`` (scoring through the
engine ``meddiff.diffusion.streaming``); counterfactuals by classifier-free guidance (``meddiff.diffusion.counterfactual``).
The model and the pure-tensor machinery it stands on live in ``meddiff.diffusion`` (schedule, loss, engine, stopping).
"""

from meddiff.method_registry import Method, register

register(Method("diffusion", f"{__name__}.train:train_diffusion", f"{__name__}.predictor:DiffusionPredictor", votes=True,
                description="conditional diffusion model as a majority-vote classifier (Favero et al.)",
                counterfactual=f"{__name__}.counterfactual:load_counterfactuals",
                short="DM",
                sizing=f"{__name__}.sizing:full_size"))
