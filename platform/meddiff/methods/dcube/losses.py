"""D-Cube's training losses (Jang et al., eqs. 4, 7, 8, 10), pure tensor functions.

  L_CLS = L_CE + lambda_1 L_Cycle + lambda_2 L_CR   (eq. 10)   [+ lambda_c L_Cont, see below]

- L_Cycle (eq. 7) = E || eps_theta(x_t, y_tilde) - eps_theta(x_t, y) ||^2: the frozen denoiser conditioned on the
  head's predicted class and on the true class should predict the same noise. The prediction y_tilde enters as its
  softmax probabilities (a mixture of class embeddings, ``features.soft_class_conditioning``) so the loss has a
  gradient; only the head learns. The equation writes ||.||_2; the text calls it an L2 distance: the squared
  per-element mean is used, as for the diffusion loss (eq. 3).
- L_CR (eq. 8) = 1/N sum_i || g(x_i) - g(T(x_i)) ||^2, T a horizontal flip, g the logits.
- L_Cont (eq. 4) = sum over pairs of (1 - target) ||f1 - f2||_2 + target max(margin - ||f1 - f2||_2, 0), target 1 when
  the two labels differ. In the paper it trains the diffusion model itself (step 1, L_Gen = L_Cont + L_Diff + L_Diff,
  eq. 5) on its mid-block features; the diffusion model is frozen here, so it acts on the head's embedding of the
  mid-block features, and is averaged (not summed) over the pairs so that its weight does not depend on the batch size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def consistency_loss(logits: torch.Tensor, logits_flipped: torch.Tensor) -> torch.Tensor:
    """Eq. 8: mean over the batch of the squared L2 distance between the logits [B, C] of images and of their flips."""
    return (logits.float() - logits_flipped.float()).pow(2).sum(dim=1).mean()


def cycle_loss(eps_pred_class: torch.Tensor, eps_true_class: torch.Tensor) -> torch.Tensor:
    """Eq. 7: mean squared difference of the noise predicted under the predicted class and under the true class
    [B, C, H, W]; the true-class prediction is a constant target."""
    return F.mse_loss(eps_pred_class.float(), eps_true_class.detach().float())


def contrastive_loss(f1: torch.Tensor, f2: torch.Tensor, different: torch.Tensor, margin: float = 0.1) -> torch.Tensor:
    """Eq. 4 over pairs (f1[i], f2[i]) of embeddings [B, D]; ``different`` [B] is 1 where the pair's labels differ.

    Same class: pulled together by ||f1 - f2||_2; different classes: pushed to at least ``margin`` apart."""
    d = torch.linalg.vector_norm(f1.float() - f2.float(), dim=1)
    target = different.float()
    return ((1.0 - target) * d + target * torch.clamp(margin - d, min=0.0)).mean()


def paired(embedding: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairs of a batch for eq. 4: every sample with the next one (cyclically). Returns f1, f2, different [B]."""
    f2, y2 = embedding.roll(1, dims=0), labels.roll(1, dims=0)
    return embedding, f2, (labels != y2).long()
