"""Uncertainty of a diffusion classifier's prediction from its votes (the paper's "uncertainty for free").

The N per-draw votes form a categorical distribution p_c = votes_c / N (Bernoulli for two classes); its entropy,
normalised by log C to lie in [0, 1] (bits for a binary task), is the uncertainty: 0 when every draw agrees, 1 when the
votes split evenly.
"""

from __future__ import annotations

import math

import torch


def vote_share(votes: torch.Tensor) -> torch.Tensor:
    """[B, C] vote counts -> [B, C] shares summing to 1 (an all-zero row stays zero)."""
    total = votes.sum(dim=-1, keepdim=True).clamp(min=1)
    return votes.float() / total


def vote_entropy(votes: torch.Tensor) -> torch.Tensor:
    """[B, C] vote counts -> [B] normalised entropy in [0, 1]."""
    return probability_entropy(vote_share(votes))


def probability_entropy(prob: torch.Tensor) -> torch.Tensor:
    """[B, C] probabilities -> [B] entropy / log C in [0, 1] (0 log 0 = 0)."""
    p = prob.double().clamp(min=0)
    ent = -(p * torch.log(p.clamp(min=1e-300))).sum(dim=-1)
    c = prob.shape[-1]
    return (ent / math.log(c) if c > 1 else torch.zeros_like(ent)).clamp(0.0, 1.0).float()


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """[B, C] logits -> [B] normalised entropy of the softmax (the uncertainty of a discriminative baseline)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    ent = -(logp.exp() * logp).sum(dim=-1)
    c = logits.shape[-1]
    return ent / math.log(c) if c > 1 else torch.zeros_like(ent)


def band_edge(threshold: float) -> float:
    """Two classes: the share p >= 1/2 whose normalised vote entropy is ``threshold``. An image is referred (entropy
    above the threshold) exactly when its class-0 share lies in (1 - p, p); 1/2 when nothing is referred
    (threshold >= 1), 1 when everything but unanimous votes is."""
    if threshold >= 1:
        return 0.5
    if threshold <= 0:
        return 1.0
    lo, hi = 0.5, 1.0
    for _ in range(80):  # bisection: the binary entropy falls from 1 to 0 on [1/2, 1]
        mid = (lo + hi) / 2
        h = -(mid * math.log2(mid) + (1 - mid) * math.log2(1 - mid))
        lo, hi = (mid, hi) if h > threshold else (lo, mid)
    return (lo + hi) / 2
