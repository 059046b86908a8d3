"""The discrete label diffusion of DiDiCM as pure tensor functions: forward kernel, posteriors, both reverse processes.

Forward process over the C class labels, a K-step chain c_0 -> c_1 -> ... -> c_K. The kernel is the *uniform* one
(the paper's uniform rate matrix R = (1 1^T - C I) / C, as in SEDD's ``Uniform`` graph, with the log-linear noise
sigma(t) = -log(1 - (1 - eps) t)): exp(sigma R) keeps the label with weight e^-sigma and otherwise resamples it
uniformly, so at step k of K (t = k / K)

    q(c_k | c_0) = abar_k [c_k = c_0] + (1 - abar_k) / C,        abar_k = 1 - (1 - eps) k / K,

and from step s to t > s the chain keeps the label with weight a = abar_t / abar_s (the same form). c_K is uniform up
to eps (1e-3). The network predicts the clean label, pi(c_0 | x, c_k, k) (a softmax over C), and is trained with
cross-entropy; the paper's network instead predicts the concrete score p_t(c') / p_t(c_t) trained with score entropy
in continuous time. Both carry the same information: by Bayes, p(c_0 | x, c_k = j) = q(j | c_0) p(c_0 | x) / p_k(j | x).

Reverse step from t to s < t (``posterior_table``): q(c_s | c_t, c_0) = q(c_t | c_s) q(c_s | c_0) / q(c_t | c_0) and

    p(c_s | c_t, x) = sum_c0 q(c_s | c_t, c_0) pi(c_0 | x, c_t).

Two inference modes (the paper's DiDiCM-CP and DiDiCM-CL):
  * probabilities (``reverse_probabilities``): propagate the full distribution p_t over labels, starting uniform.
    Per step ONE evaluation, at the label j the rule picks from p_t (``max`` or ``min``, as the authors' code);
    p(c_0 | x) ~ pi(c_0 | x, j) / q(j | c_0) (Bayes above) then gives pi(c_0 | x, c) for every c, and
        p_s(c_s) = sum_c p_t(c) sum_c0 q(c_s | c, c_0) pi(c_0 | x, c).
    nfe = number of reverse steps.
  * labels (``reverse_labels``): S chains per image start at uniform labels and sample c_s ~ p(c_s | c_t, x) at every
    step; the final labels are counted, prob = counts / S. Chains of one image that hold the same label at a step
    need the same network output, so each distinct (image, label) pair is evaluated once; nfe = the evaluations made
    (at most min(S, C) per step).
Every reverse distribution sums to 1 by construction (renormalised against rounding).
"""

from __future__ import annotations

from typing import Callable

import torch

# x0_fn(rows [R] image indices into the batch, labels [R], k [R] steps (float, of K)) -> [R, C] probabilities
X0Fn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def alpha_bar(k: torch.Tensor | float, num_steps: int, eps: float = 1e-3) -> torch.Tensor:
    """abar_k = 1 - (1 - eps) k / K: the weight of keeping the clean label after k of K steps (k = 0: 1)."""
    k = torch.as_tensor(k, dtype=torch.float64)
    return 1.0 - (1.0 - eps) * k / num_steps


def kernel(keep: torch.Tensor | float, num_classes: int) -> torch.Tensor:
    """[C, C] matrix M[i, j] = q(j | i) = keep [i = j] + (1 - keep) / C (rows sum to 1), float64."""
    keep = torch.as_tensor(keep, dtype=torch.float64)
    eye = torch.eye(num_classes, dtype=torch.float64)
    return keep * eye + (1.0 - keep) / num_classes


def q_sample(c0: torch.Tensor, abar: torch.Tensor, num_classes: int,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample c_k ~ q(c_k | c_0): [B] labels, [B] abar_k -> [B] noisy labels (resampled uniformly w.p. 1 - abar)."""
    u = torch.rand(c0.shape, generator=generator, device=c0.device)
    uniform = torch.randint(0, num_classes, c0.shape, generator=generator, device=c0.device)
    return torch.where(u < (1.0 - abar.to(c0.device)).float(), uniform, c0)


def posterior_table(abar_t: torch.Tensor | float, abar_s: torch.Tensor | float, num_classes: int) -> torch.Tensor:
    """[C, C, C] table T[c_t, c_0, c_s] = q(c_s | c_t, c_0) for s < t (float64; sums to 1 over c_s)."""
    abar_t, abar_s = torch.as_tensor(abar_t, dtype=torch.float64), torch.as_tensor(abar_s, dtype=torch.float64)
    step = kernel(abar_t / abar_s, num_classes)  # [c_s, c_t] = q(c_t | c_s)
    prior = kernel(abar_s, num_classes)  # [c_0, c_s] = q(c_s | c_0)
    joint = step.T[:, None, :] * prior[None, :, :]  # [c_t, c_0, c_s]
    return joint / joint.sum(dim=-1, keepdim=True)


def step_grid(num_steps: int, inference_steps: int) -> list[int]:
    """Decreasing chain steps K = k_0 > k_1 > ... > 0 for ``inference_steps`` reverse steps (evenly spaced; 0 = K)."""
    n = num_steps if inference_steps <= 0 else min(inference_steps, num_steps)
    ks = torch.linspace(num_steps, 0, n + 1).round().long().tolist()
    return sorted(set(ks), reverse=True)


def _normalise(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(min=0)
    return p / p.sum(dim=-1, keepdim=True)


def reverse_probabilities(x0_fn: X0Fn, batch: int, num_classes: int, num_steps: int, inference_steps: int,
                          eps: float = 1e-3, label_rule: str = "max",
                          device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """DiDiCM on class probabilities.

    Returns: (p_0 [B, C] float64, nfe [B] long, [p_K, ..., p_0] the distribution after every step).
    """
    if label_rule not in ("max", "min"):
        raise ValueError(f"label_rule: expected 'max' or 'min', got {label_rule!r}")
    rows = torch.arange(batch, device=device)
    p = torch.full((batch, num_classes), 1.0 / num_classes, dtype=torch.float64, device=device)
    trace = [p]
    ks = step_grid(num_steps, inference_steps)
    for k_t, k_s in zip(ks[:-1], ks[1:]):
        abar_t, abar_s = alpha_bar(k_t, num_steps, eps), alpha_bar(k_s, num_steps, eps)
        j = p.argmax(dim=1) if label_rule == "max" else p.argmin(dim=1)
        pi_j = x0_fn(rows, j, torch.full((batch,), float(k_t), device=device)).to(torch.float64)
        q_t = kernel(abar_t, num_classes).to(device)  # [c_0, c_t] = q(c_t | c_0)
        p_clean = _normalise(pi_j / q_t[:, j].T)  # p(c_0 | x) by Bayes, [B, C]
        pi_all = _normalise(q_t.T[None, :, :] * p_clean[:, None, :])  # [B, c_t, c_0] = pi(c_0 | x, c_t)
        table = posterior_table(abar_t, abar_s, num_classes).to(device)  # [c_t, c_0, c_s]
        p = _normalise(torch.einsum("bc,bco,cos->bs", p, pi_all, table))
        trace.append(p)
    nfe = torch.full((batch,), len(ks) - 1, dtype=torch.long)
    return p, nfe, trace


def reverse_labels(x0_fn: X0Fn, uniforms: torch.Tensor, num_classes: int, num_steps: int, inference_steps: int,
                   eps: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """DiDiCM on sampled labels.

    Args:
        uniforms: [B, n_steps + 1, S] uniforms in [0, 1) (column 0 draws the start labels, column i step i's
            sample); seeded per image by the caller so a chain does not depend on the batch. n_steps must be at least
            the number of reverse steps of ``step_grid(num_steps, inference_steps)``.
    Returns: (counts [B, C] of the S final labels, nfe [B] network evaluations per image).
    """
    b, _, s = uniforms.shape
    device = uniforms.device
    ks = step_grid(num_steps, inference_steps)
    if uniforms.shape[1] < len(ks):
        raise ValueError(f"uniforms: need {len(ks)} columns for {len(ks) - 1} reverse steps, got {uniforms.shape[1]}")
    labels = (uniforms[:, 0] * num_classes).long().clamp(max=num_classes - 1)  # [B, S] uniform start
    nfe = torch.zeros(b, dtype=torch.long)
    image = torch.arange(b, device=device)[:, None].expand(b, s)
    for i, (k_t, k_s) in enumerate(zip(ks[:-1], ks[1:]), start=1):
        key = (image * num_classes + labels).reshape(-1)
        uniq, inverse = torch.unique(key, return_inverse=True)
        pi = x0_fn(uniq // num_classes, uniq % num_classes,
                   torch.full((len(uniq),), float(k_t), device=device)).to(torch.float64)
        nfe += torch.bincount((uniq // num_classes).cpu(), minlength=b)
        table = posterior_table(alpha_bar(k_t, num_steps, eps), alpha_bar(k_s, num_steps, eps),
                                num_classes).to(device)
        flat = labels.reshape(-1)
        probs = _normalise(torch.einsum("ro,ros->rs", pi[inverse], table[flat]))  # [B S, C] p(c_s | c_t, x)
        cdf = probs.cumsum(dim=-1)
        u = uniforms[:, i].reshape(-1, 1).to(torch.float64) * cdf[:, -1:]
        labels = (cdf <= u).sum(dim=-1).clamp(max=num_classes - 1).reshape(b, s)
    counts = torch.nn.functional.one_hot(labels, num_classes).sum(dim=1)
    return counts, nfe
