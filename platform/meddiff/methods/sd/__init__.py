"""Fine-tuned Stable Diffusion as a diffusion classifier (``method: sd``, checkpoint ``kind: sd``).

Follows Favero et al. 2025 (section 3.4, Appendix D: Stable Diffusion v2-base fine-tuned with the Hugging Face
text-to-image recipe on the training split, class labels replaced by text prompts) and Li et al. 2023 ("Your
diffusion model is secretly a zero-shot classifier": latents from the VAE posterior mean, epsilon errors per class
prompt under shared noise and timesteps), scored with the paper's majority vote, the average rule, vote-entropy
uncertainty and early exit from meddiff's own engine.

Modules:
    model      options (``method_options``), the local pretrained folder, prompts, latents, bundles -> SDModel
    tiny       ``build_tiny_pipeline``: a tiny random SD folder for tests and CPU presets
    train      ``train_sd``: the fine-tuning loop (Ray Train through the method registry)
    engine     adapters that let the classifier engine drive an eps-prediction UNet at DDPM timesteps
    predictor  ``SDPredictor``: batch scoring, Ray Data actors and serving
    counterfactual  ``load_counterfactuals``: SDEdit with classifier-free guidance in latent space (``meddiff explain``)

Simplifications and choices:
- One data set per run (the paper fine-tuned once on CheXpert + ISIC together); only the UNet is trained, the VAE and
  text encoder stay frozen, prompts are encoded once; plain Adam (the HF script uses AdamW, weight decay 1e-2: set
  ``train.weight_decay``), no prompt dropout, no SNR weighting, no offset noise.
- A bundle stores the fine-tuned UNet (weights + config) and refers to the frozen VAE / text encoder / tokenizer by
  the pretrained path, with a sha256 fingerprint of their files that scoring checks.
- Draws use t ~ U[t_min, t_max] mapped to timestep floor(t T) (Li et al. use evenly spaced timesteps; with the same
  draws for every class either is a fair comparison) and error = mean squared error of eps (``score.error_target``
  x and v are derived from it).
- Without real SD weights offline, CPU presets use ``tiny:`` random pipelines (``tiny``): their VAE and text
  encoder are random, so the CPU figures measure the machinery, not what a pretrained SD brings.
"""

from meddiff.method_registry import Method, register

register(Method("sd", f"{__name__}.train:train_sd", f"{__name__}.predictor:SDPredictor", votes=True,
                description="Stable Diffusion fine-tuned on class prompts, latent eps errors with majority vote "
                            "(Favero et al.)",
                counterfactual=f"{__name__}.counterfactual:load_counterfactuals",
                short="SD",
                sizing=f"{__name__}.sizing:full_size"))
