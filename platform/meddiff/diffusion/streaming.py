"""Continuous-batching classifier engine with early exit (pure torch, no Ray).

Images flow through a fixed number of slots. Every step takes the next ``chunk`` draws of every image in a slot, runs
all their (image, draw, class) triples through the denoiser in class-batched forward passes (``engine.pair_errors``),
adds the votes, and asks the stopping rule (``stopping.should_stop``) which images are done. Finished images leave
with their result and their slots are refilled with new images at once, so the device always sees full batches
even though images stop after different numbers of draws.

Draw k of an image always uses the noise seeded by (image seed, k), so an image's errors do not depend on its
neighbours, the slot count or the chunk size; with ``rule="exact"`` the prediction equals the full-N vote exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import torch
from torch import nn

from meddiff.diffusion.engine import EngineSpec, pair_errors, vote_prediction
from meddiff.diffusion.stopping import should_stop
from meddiff.diffusion.uncertainty import vote_entropy


@dataclass(frozen=True)
class StreamSpec:
    """n_draws: the most draws an image may use (N). rule / delta: the stopping rule (``stopping.RULES``).
    chunk: draws added per image between looks. slots: images in flight. refer_above: the referral threshold on the
    normalised vote entropy, for the rules that also stop on the referral decision (``futility``), and decision_z their
    optional guard on that decision (``stopping.futility_stop``)."""

    n_draws: int
    rule: str = "none"
    delta: float = 0.01
    chunk: int = 8
    slots: int = 32
    refer_above: float | None = None
    decision_z: float = 0.0


@dataclass
class ImageResult:
    """One image's classification from the draws it used (n_draws <= N)."""

    votes: torch.Tensor  # [C] int64
    mean_error: torch.Tensor  # [C]
    pred_vote: int
    pred_average: int
    uncertainty: float
    n_draws: int
    errors: torch.Tensor  # [C, n_draws]
    t: torch.Tensor  # [n_draws]


@dataclass
class _Slot:
    key: Any
    x: torch.Tensor  # [C_in, H, W]
    seed: int
    errors: list[torch.Tensor] = field(default_factory=list)  # chunks of [C, k]
    ts: list[torch.Tensor] = field(default_factory=list)
    votes: torch.Tensor | None = None
    drawn: int = 0


def _finish(slot: _Slot) -> ImageResult:
    errors = torch.cat(slot.errors, dim=1)
    mean_error = errors.mean(dim=1)
    votes = slot.votes
    return ImageResult(
        votes=votes,
        mean_error=mean_error,
        pred_vote=int(vote_prediction(votes[None], mean_error[None])[0]),
        pred_average=int(mean_error.argmin()),
        uncertainty=float(vote_entropy(votes[None])[0]),
        n_draws=slot.drawn,
        errors=errors,
        t=torch.cat(slot.ts),
    )


@torch.inference_mode()
def stream_classify(
    denoiser: nn.Module,
    items: Iterable[tuple[Any, torch.Tensor, int]],
    spec: EngineSpec,
    stream: StreamSpec,
) -> Iterator[tuple[Any, ImageResult]]:
    """Classify ``items`` = (key, x [C_in, H, W] in model space on the denoiser's device, image seed).

    Yields (key, ImageResult) as images finish (not in input order).
    """
    c = spec.num_classes
    pending = iter(items)
    slots: list[_Slot] = []
    exhausted = False
    while True:
        while not exhausted and len(slots) < stream.slots:
            try:
                key, x, seed = next(pending)
            except StopIteration:
                exhausted = True
                break
            slots.append(_Slot(key, x, int(seed), votes=torch.zeros(c, dtype=torch.long, device=x.device)))
        if not slots:
            return
        # the next chunk of draws of every image in flight, as flat (image, draw) pairs
        counts = [min(stream.chunk, stream.n_draws - s.drawn) for s in slots]
        xs = torch.stack([s.x for s in slots]).repeat_interleave(torch.tensor(counts, device=slots[0].x.device), dim=0)
        seeds = [s.seed for s, k in zip(slots, counts) for _ in range(k)]
        draw_ids = [s.drawn + j for s, k in zip(slots, counts) for j in range(k)]
        errors, t = pair_errors(denoiser, xs, seeds, draw_ids, spec)
        start = 0
        for s, k in zip(slots, counts):
            e = errors[start : start + k].T  # [C, k]
            s.errors.append(e)
            s.ts.append(t[start : start + k])
            s.votes += torch.bincount(e.argmin(dim=0), minlength=c)
            s.drawn += k
            start += k
        votes = torch.stack([s.votes for s in slots])
        drawn = torch.tensor([s.drawn for s in slots], device=votes.device)
        done = should_stop(votes, drawn, stream.n_draws, stream.rule, stream.delta, stream.chunk,
                           stream.refer_above, stream.decision_z).tolist()
        keep = []
        for s, d in zip(slots, done):
            if d:
                yield s.key, _finish(s)
            else:
                keep.append(s)
        slots = keep
