"""Early-exit, continuous-batching engine: identical predictions to the full vote, NFE accounting, slot refilling."""

import math

import pytest
import torch

from meddiff.diffusion.engine import EngineSpec, draw_errors, summarize
from meddiff.diffusion.noise import image_seed
from meddiff.diffusion.schedule import ShiftedCosineSchedule
from meddiff.errors import ConfigError
from meddiff.diffusion.stopping import exact_stop, log_mixture_ratio, mixture_stop, should_stop, wilson_bounds
from meddiff.diffusion.streaming import StreamSpec, stream_classify


class ToyDenoiser(torch.nn.Module):
    """Class 1 fits images with a bright centre, class 0 dark ones; margins vary so some images are close calls."""

    def forward(self, z, time, labels):
        centre = z[:, :, 2:6, 2:6].mean(dim=(1, 2, 3), keepdim=True)
        bias = torch.where(labels.reshape(-1, 1, 1, 1) == 1, 0.3, -0.3)
        return 0.6 * z + 0.2 * torch.tanh(centre + bias) + 0.01 * time.reshape(-1, 1, 1, 1)


SPEC = EngineSpec(num_classes=2, schedule=ShiftedCosineSchedule(image_size=8), max_batch=64)


def _images(n=24):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 8, 8, generator=g) * 0.3
    x[: n // 2, :, 2:6, 2:6] += torch.linspace(0.0, 0.8, n // 2).reshape(-1, 1, 1, 1)
    return x, [image_seed(3, f"img{i}") for i in range(n)]


def _stream(x, seeds, **kw):
    items = ((i, x[i], seeds[i]) for i in range(len(seeds)))
    return dict(stream_classify(ToyDenoiser(), items, SPEC, StreamSpec(**kw)))


def test_exact_early_exit_equals_the_full_vote():
    x, seeds = _images()
    n = 51
    full = summarize(draw_errors(ToyDenoiser(), x, seeds, range(n), SPEC)[0])
    res = _stream(x, seeds, n_draws=n, rule="exact", chunk=3, slots=5)
    assert [res[i].pred_vote for i in range(len(seeds))] == full.pred_vote.tolist()
    used = [res[i].n_draws for i in range(len(seeds))]
    assert max(used) <= n and sum(used) < n * len(seeds), "no image stopped early"
    for i in range(len(seeds)):
        r = res[i]
        assert r.errors.shape == (2, r.n_draws) and r.t.shape == (r.n_draws,)
        assert int(r.votes.sum()) == r.n_draws
        # stopping was justified: the lead exceeded the draws left
        if r.n_draws < n:
            lead = r.votes.max() - r.votes.min()
            assert lead > n - r.n_draws


def test_no_stopping_equals_the_batch_engine_whatever_the_slots():
    x, seeds = _images(10)
    errors, t = draw_errors(ToyDenoiser(), x, seeds, range(13), SPEC)
    for slots, chunk in [(1, 13), (3, 4), (10, 1)]:
        res = _stream(x, seeds, n_draws=13, rule="none", chunk=chunk, slots=slots)
        for i in range(10):
            assert res[i].n_draws == 13
            assert torch.allclose(res[i].errors, errors[i], atol=1e-6)
            assert torch.equal(res[i].t, t[i])


def test_slots_are_refilled_as_images_stop():
    class Counting(ToyDenoiser):
        def __init__(self):
            super().__init__()
            self.batch_sizes = []

        def forward(self, z, time, labels):
            self.batch_sizes.append(z.shape[0])
            return super().forward(z, time, labels)

    x, seeds = _images(24)
    net = Counting()
    pulled_at = []  # forward passes run before each image entered a slot

    def items():
        for i in range(24):
            pulled_at.append(len(net.batch_sizes))
            yield i, x[i], seeds[i]

    spec = EngineSpec(num_classes=2, schedule=SPEC.schedule, max_batch=10_000)
    out = list(stream_classify(net, items(), spec, StreamSpec(n_draws=101, rule="wilson", chunk=4, slots=6)))
    assert sorted(k for k, _ in out) == list(range(24))
    assert len(set(pulled_at)) > 1, "images were only loaded once: nothing was refilled"
    # until the last image entered, every step ran a full set of slots (6 images x 4 draws x 2 classes)
    assert net.batch_sizes[: pulled_at[-1] + 1] == [6 * 4 * 2] * (pulled_at[-1] + 1)


def test_sequential_rules_use_fewer_draws_and_stay_within_n():
    x, seeds = _images()
    exact = _stream(x, seeds, n_draws=201, rule="exact", chunk=1, slots=8)
    for rule in ("wilson", "wilson_per_look", "hoeffding", "mixture"):
        seq = _stream(x, seeds, n_draws=201, rule=rule, delta=0.01, chunk=1, slots=8)
        assert all(r.n_draws <= 201 for r in seq.values())
        assert sum(r.n_draws for r in seq.values()) < sum(r.n_draws for r in exact.values())
        agree = sum(seq[i].pred_vote == exact[i].pred_vote for i in seq) / len(seq)
        assert agree >= 0.9


def test_exact_rule_is_strict():
    votes = torch.tensor([[6, 3], [6, 2], [5, 5]])
    drawn = torch.tensor([9, 8, 10])
    # 11 draws in all: image 0 leads by 3 with 2 left -> stop; image 1 leads by 4 with 3 left -> stop; image 2 tied
    assert exact_stop(votes, drawn, 11).tolist() == [True, True, False]
    assert exact_stop(torch.tensor([[5, 3]]), torch.tensor([8]), 10).tolist() == [False]  # lead 2, 2 left: could tie


def test_wilson_union_bound_over_looks():
    lo, hi = wilson_bounds(torch.tensor([10]), torch.tensor([10]), 1.96)
    assert lo.item() == pytest.approx(10 / (10 + 1.96**2), rel=1e-6) and hi.item() == pytest.approx(1.0)
    # unanimous votes: stop once n / (n + z^2) > 1/2, with z from delta / (2 L), L = N / chunk looks
    from scipy.stats import norm

    z = norm.isf(0.01 / (2 * 501))
    n_min = math.floor(z * z) + 1
    votes = torch.tensor([[n_min - 1, 0], [n_min, 0]])
    stop = should_stop(votes, votes.sum(1), 501, "wilson", 0.01, chunk=1)
    assert stop.tolist() == [False, True]
    with pytest.raises(ConfigError, match="unknown stopping rule 'sprt'"):
        should_stop(votes, votes.sum(1), 501, "sprt")


def test_mixture_ratio_matches_its_integral():
    from scipy.integrate import quad

    for k, m in [(0, 0), (11, 0), (7, 3), (3, 7), (40, 25)]:
        integral = 2 * 2 ** (k + m) * quad(lambda q: q**k * (1 - q) ** m, 0.5, 1)[0]
        got = math.exp(log_mixture_ratio(torch.tensor([k]), torch.tensor([m])).item())
        assert got == pytest.approx(integral, rel=1e-6)
    # two classes at delta = 0.01: threshold (C - 1) / delta = 100; unanimous votes cross it at 9 draws (2^10 / 10)
    votes = torch.tensor([[8, 0], [9, 0], [0, 9], [50, 25], [120, 60], [5, 5]])
    assert mixture_stop(votes, 0.01).tolist() == [False, True, True, False, True, False]
    # three classes: the leader must beat every rival (threshold 2 / delta)
    assert mixture_stop(torch.tensor([[30, 2, 1], [30, 25, 0]]), 0.01).tolist() == [True, False]


def test_mixture_guarantee_holds_under_looks_after_every_draw():
    """Class 0 at share 1/2, the hardest case of "class 0 is not ahead", looked at after every one of 501 draws: the
    mixture rule stops on class 0 at most delta of the time (Ville's inequality); the Wilson test at delta per look
    (``wilson_per_look``) stops on it many times more often."""
    gen = torch.Generator().manual_seed(0)
    delta, runs, n = 0.05, 3000, 501
    wins = (torch.rand(runs, n, generator=gen) < 0.5).long().cumsum(1)  # class-0 votes after 1..n draws
    drawn = torch.arange(1, n + 1).expand(runs, n)
    votes = torch.stack([wins, drawn - wins], dim=2).reshape(-1, 2)
    on_class_0 = (votes[:, 0] > votes[:, 1]).reshape(runs, n)

    def wrong(rule):
        stop = should_stop(votes, votes.sum(1), 10**6, rule, delta, chunk=1).reshape(runs, n)  # no exact stop
        return (stop & on_class_0).any(1).float().mean().item()

    assert mixture_stop(votes, delta).reshape(runs, n).eq(should_stop(votes, votes.sum(1), 10**6, "mixture", delta)
                                                          .reshape(runs, n)).all()
    assert wrong("mixture") <= delta
    assert wrong("wilson_per_look") > 3 * delta  # optional stopping inflates a per-look level many times


def test_replay_over_stored_errors_equals_the_streaming_engine():
    """The benchmark's replay table (every rule x chunk without denoiser calls) is what the engine would have done."""
    from meddiff.bench.replay import replay_stopping

    x, seeds = _images()
    n = 61
    errors = draw_errors(ToyDenoiser(), x, seeds, range(n), SPEC)[0]
    for rule, delta, chunk in [("exact", 0.01, 3), ("wilson", 0.05, 4), ("mixture", 0.05, 1), ("mixture", 0.01, 5),
                               ("hoeffding", 0.05, 2), ("none", 0.01, 7)]:
        res = _stream(x, seeds, n_draws=n, rule=rule, delta=delta, chunk=chunk, slots=7)
        used, pred = replay_stopping(errors, rule, delta, chunk)
        assert used.tolist() == [res[i].n_draws for i in range(len(seeds))], (rule, chunk)
        assert pred.tolist() == [res[i].pred_vote for i in range(len(seeds))], (rule, chunk)
