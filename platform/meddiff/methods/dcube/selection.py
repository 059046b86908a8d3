"""Layer selection by a Gaussianity metric (D-Cube, Jang et al., section III.B.2.a), pure functions over arrays.

The paper's reasoning: a denoiser predicts Gaussian noise, so layers whose activations look Gaussian mostly carry noise,
while layers whose activations deviate from a Gaussian keep the image's semantics. The Kolmogorov-Smirnov test measures
the distance D = sup |F_n(x) - Phi(x)| between a layer's empirical CDF and the Gaussian's (eq. 6); the paper keeps the
layers with p < 0.05 (non-Gaussian, its "best selection", Fig. 2 / Table VI).

How a layer is tested here (the paper says only "the average of features with a batch size of 256"): the layer's
spatially pooled features [n images, D channels] are standardised per channel over the n images, each channel is
KS-tested against N(0, 1) (``scipy.stats.kstest``), and the layer's statistic is the mean D over its channels and its
p-value the median channel p-value. Standardising with the sample's own mean and standard deviation makes the p-values
conservative (Lilliefors); the ranking by D is unaffected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class LayerKS:
    """statistic: mean KS distance D over channels (0 = perfectly Gaussian); pvalue: median channel p-value;
    channels: how many (non-constant) channels were tested."""

    statistic: float
    pvalue: float
    channels: int


def layer_gaussianity(features: np.ndarray) -> LayerKS:
    """KS Gaussianity of one layer's pooled features [n, D] (n images, D channels; n >= 8)."""
    from scipy import stats

    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 8:
        raise ValueError(f"layer_gaussianity: expected features [n >= 8 images, D channels], got shape {f.shape}")
    std = f.std(axis=0)
    keep = std > 1e-12 * max(1.0, float(np.abs(f).max()))
    if not keep.any():  # a constant layer carries nothing and is certainly not Gaussian
        return LayerKS(statistic=1.0, pvalue=0.0, channels=0)
    z = (f[:, keep] - f[:, keep].mean(axis=0)) / std[keep]
    res = stats.kstest(z, "norm", axis=0)
    return LayerKS(statistic=float(np.mean(res.statistic)), pvalue=float(np.median(res.pvalue)),
                   channels=int(keep.sum()))


def rank_layers(ks: Mapping[str, LayerKS], mode: str) -> list[str]:
    """Layer names, best first: least Gaussian first for ``non_gaussian`` (largest D), most Gaussian first for
    ``gaussian``; ties keep the given order."""
    names = list(ks)
    sign = -1.0 if mode == "non_gaussian" else 1.0
    return sorted(names, key=lambda n: (sign * ks[n].statistic, names.index(n)))


def select_layers(ks: Mapping[str, LayerKS], mode: str = "non_gaussian", alpha: float = 0.05, top_k: int = 0,
                  min_layers: int = 1) -> list[str]:
    """The kept layers, in the given (network) order.

    Args:
        ks: layer name -> its KS result, in network order.
        mode: ``non_gaussian`` (the paper: keep p < alpha), ``gaussian`` (keep p >= alpha) or ``all``.
        top_k: > 0 keeps the ``top_k`` best-ranked layers (``rank_layers``) instead of thresholding p.
        min_layers: with the threshold, the best-ranked layers fill up the selection to at least this many.
    """
    if mode not in ("non_gaussian", "gaussian", "all"):
        raise ValueError(f"select_layers: mode must be 'non_gaussian', 'gaussian' or 'all', got {mode!r}")
    if not ks:
        raise ValueError("select_layers: no layers to select from")
    names = list(ks)
    if mode == "all":
        return names
    ranked = rank_layers(ks, mode)
    if top_k > 0:
        kept = set(ranked[:top_k])
    else:
        passes = (lambda r: r.pvalue < alpha) if mode == "non_gaussian" else (lambda r: r.pvalue >= alpha)
        kept = {n for n in names if passes(ks[n])}
        for n in ranked:
            if len(kept) >= min(min_layers, len(names)):
                break
            kept.add(n)
    return [n for n in names if n in kept]


def ks_subset(n: int, k: int, seed: int) -> np.ndarray:
    """The sorted indices of a seeded subset of min(k, n) of n training images (the images the KS tests use)."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(k, n), replace=False))


def describe(ks: Mapping[str, LayerKS], dims: Mapping[str, int], kept: Sequence[str]) -> list[str]:
    """One log line per layer: name, feature width, D, p, kept or not."""
    return [f"  {'*' if n in kept else ' '} {n:28s} dim {dims[n]:5d}  KS D {r.statistic:.3f}  p {r.pvalue:.3g}"
            for n, r in ks.items()]
