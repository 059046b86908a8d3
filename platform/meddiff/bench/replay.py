"""Replay a stopping rule over stored per-draw errors: which draw each image would have stopped at, and its vote then.

The streaming engine (``diffusion.streaming``) looks after every ``chunk`` draws of an image and asks
``stopping.should_stop``; here the same looks run over the full-N errors [B, C, N] the reference loop already computed,
so every rule, risk and chunk size can be compared on the same images and noise without another denoiser call. The
result is identical to what the engine returns for the same rule and chunk (tested).
"""

from __future__ import annotations

import torch

from meddiff.diffusion.engine import vote_prediction
from meddiff.diffusion.stopping import should_stop

# A draw whose two best classes' errors are closer than this (relative) may vote either way when the same draw is
# computed in another batch shape or with another thread count: float32 sums then differ in the last bits (measured
# on a small UNet, reference loop vs the class-batched engine at micro-batches 8 to 256, 1 or 2 threads: at most
# 3.2e-7 relative). So two scorings of the same noise agree on every draw except, at most, these.
NEAR_TIE = 1e-4


def near_tied_draws(errors: torch.Tensor, rel: float = NEAR_TIE) -> torch.Tensor:
    """[..., C, N] per-draw errors -> [...] how many draws have their two best classes within ``rel`` (relative)."""
    best = errors.double().topk(2, dim=-2, largest=False).values  # [..., 2, N]
    gap = (best[..., 1, :] - best[..., 0, :]) / best[..., 1, :].abs().clamp(min=1e-30)
    return (gap < rel).sum(dim=-1)


def replay_stopping(errors: torch.Tensor, rule: str, delta: float = 0.01, chunk: int = 8,
                    refer_above: float | None = None, with_votes: bool = False, decision_z: float = 0.0):
    """[B, C, N] per-draw errors -> (draws used [B], majority-vote prediction from those draws [B]), and with
    ``with_votes`` also the votes [B, C] of those draws. ``refer_above``: the referral threshold, for the rules that
    stop on the referral decision."""
    b, c, n = errors.shape
    winners = torch.nn.functional.one_hot(errors.argmin(dim=1), c).cumsum(dim=1)  # [B, N, C] votes after 1..N draws
    error_sums = errors.cumsum(dim=2)  # [B, C, N]
    used = torch.full((b,), n, dtype=torch.long)
    open_ = torch.ones(b, dtype=torch.bool)
    for drawn in list(range(chunk, n, chunk)) + [n]:
        votes = winners[:, drawn - 1]
        stop = should_stop(votes, torch.full((b,), drawn), n, rule, delta, chunk, refer_above, decision_z) & open_
        used[stop] = drawn
        open_ &= ~stop
        if not open_.any():
            break
    idx = torch.arange(b)
    votes = winners[idx, used - 1]
    mean_error = error_sums[idx, :, used - 1] / used[:, None]
    pred = vote_prediction(votes, mean_error)
    return (used, pred, votes) if with_votes else (used, pred)


