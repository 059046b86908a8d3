"""D-Cube-style hyper-features (Jang et al., "D-Cube: Exploiting Hyper-Features of Diffusion Model for Robust Medical
Classification"): a light classifier on the activations of a frozen, trained class-conditional diffusion model.

What follows the paper (its step 2; step 1 is the meddiff diffusion model, trained as usual):
- features from a frozen conditional diffusion model at a fixed t (paper Fig. 2: t = 100 of 1000), from the noised
  image z_t or (Table VII) the clean image with the time input of t (``features``);
- layer selection by the Kolmogorov-Smirnov Gaussianity test, keeping the non-Gaussian layers (p < 0.05; the paper's
  "best selection"), with the opposite rule and no selection as options (``selection``);
- a classifier trained with cross-entropy, the cycle loss (eq. 7) and the consistency loss (eq. 8) weighted as in
  eq. 10, random horizontal flips, AdamW, EMA of the weights (``losses``, ``loop``).
Where it simplifies:
- features are pooled spatially (mean, optionally + std) and the head is a linear layer or a one-hidden-layer MLP; the
  paper's head convolves the unpooled maps (3x3 and 5x5 kernels, three times) before two fully connected layers;
- the KS test is run per channel of the pooled features over 256 training images and summarised per layer (mean D,
  median p): the paper only says it tests "the average of features with a batch size of 256" (``selection``);
- the paper's contrastive loss (eq. 4) trains the diffusion model itself (step 1) on its mid-block features; with the
  diffusion model frozen it acts on the head's embedding of the mid-block features (off by default);
- no ImageNet ResNet "sub-features" (f_sub): meddiff uses no pretrained natural-image weights; the paper's backbone is a
  U-ViT, here the meddiff UNet (diffusers blocks) or DiT;
- the cycle loss conditions the frozen denoiser on the head's softmax as a mixture of class embeddings (the paper does
  not say how the predicted class enters differentiably), on the first ``cycle_batch`` images of each batch.
Defaults: the null (unconditional) class, one denoiser pass per image (nfe = 1); cycle, consistency and contrastive
losses off: none gave a consistent gain beyond the spread of head seeds on the PneumoniaMNIST and ISIC val splits
(numbers in presets/dcube-*.yaml), and the cycle loss costs a denoiser forward and backward pass per step. Flips are
on by default (the paper) but off in the chest X-ray preset, where they cost accuracy.
"""

from meddiff.method_registry import Method, register

register(Method("dcube", f"{__name__}.loop:train_dcube", f"{__name__}.predictor:DCubePredictor", votes=False,
                description="D-Cube: light classifier on KS-selected hyper-features of a frozen diffusion model "
                            "(Jang et al.)",
                counterfactual_note="its head reads a frozen diffusion model's features; explain the frozen "
                                    "diffusion checkpoint instead",
                short="D-Cube",
                sizing=f"{__name__}.sizing:full_size"))
