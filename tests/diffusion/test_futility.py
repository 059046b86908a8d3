"""The ``futility`` stopping rule: its guarantee proven by simulation (wrong leader or wrong refer <= delta under looks
after every draw) at exact ties and at the referral band's edges, with independent and stratified draws; its power;
its confidence sequence; and that a futility stop is a referral."""

import math

import numpy as np
import pytest
import torch

from meddiff.diffusion.stopping import (beta_mixture_cs, exact_stop, min_box_entropy, mixture_stop, refer_settled,
                                        should_stop)
from meddiff.diffusion.uncertainty import probability_entropy, vote_entropy

DELTA = 0.05
RUNS = 2000
HORIZON = 301
SLACK = 3 * math.sqrt(DELTA * (1 - DELTA) / RUNS)  # three Monte Carlo standard errors


def _edge_share(tau: float) -> float:
    """The share p >= 1/2 whose two-class normalised entropy is exactly tau."""
    lo, hi = 0.5, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if float(probability_entropy(torch.tensor([[mid, 1 - mid]]))) > tau else (lo, mid)
    return (lo + hi) / 2


def _paths(probs: torch.Tensor, seed: int) -> torch.Tensor:
    """RUNS vote paths of HORIZON draws, draw k voting class c with probability probs[k, c] -> votes after each draw
    [RUNS, HORIZON, C]."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(RUNS, HORIZON, 1, generator=gen)
    winner = (u > probs.cumsum(1)[None]).sum(2).clamp(max=probs.shape[1] - 1)
    return torch.nn.functional.one_hot(winner, probs.shape[1]).cumsum(1)


def _first_stops(votes: torch.Tensor, tau: float, chunk: int = 1):
    """Each run's votes at its first stop (looks every ``chunk`` draws, no cap), and whether it stopped at all."""
    runs, n, c = votes.shape
    looks = torch.arange(chunk, n + 1, chunk)
    v = votes[:, looks - 1].reshape(-1, c)
    drawn = looks.repeat(runs)
    stop = should_stop(v, drawn, 10**9, "futility", DELTA, chunk, refer_above=tau).reshape(runs, len(looks))
    first = stop.float().argmax(1)
    stopped = stop.any(1)
    at = v.reshape(runs, len(looks), c)[torch.arange(runs), first]
    return at, looks[first], stopped


def _errors(at, drawn, stopped, tau, limit_leader, limit_refers):
    """Share of runs that stopped on a wrong leader (the leader test fired for a class that is not the limit's leader;
    at a tie every leader is wrong) or stopped as refer by futility while the limit is not referred."""
    leader_fired = mixture_stop(at, DELTA / 2) & ~exact_stop(at, drawn, 10**9)
    wrong_leader = leader_fired & (at.argmax(1) != limit_leader if limit_leader is not None else True)
    refer_fired = refer_settled(at, drawn, tau, DELTA / 2)
    wrong_refer = refer_fired & (not limit_refers)
    return float(((wrong_leader | wrong_refer) & stopped).float().mean())


@pytest.mark.parametrize("tau", [0.3, 0.8])
def test_exact_tie_stops_on_a_leader_at_most_delta(tau):
    """Two classes at 1/2: no class leads in the limit, so any stop on the leader test is wrong; the limit is referred
    (entropy 1 > tau), so every futility stop is right, and most runs stop that way early."""
    votes = _paths(torch.full((HORIZON, 2), 0.5), seed=1)
    at, drawn, stopped = _first_stops(votes, tau)
    assert _errors(at, drawn, stopped, tau, None, limit_refers=True) <= DELTA + SLACK
    # power: the ties are referred early instead of running to the cap
    assert stopped.float().mean() > 0.95 and float(drawn[stopped].float().median()) < 120
    by_futility = stopped & refer_settled(at, drawn, tau, DELTA / 2)
    assert by_futility.float().mean() > 0.9
    assert (vote_entropy(at[by_futility]) > tau).all()  # a futility stop is a referral at the threshold


def test_three_class_tie_stops_on_a_leader_at_most_delta():
    votes = _paths(torch.full((HORIZON, 3), 1 / 3), seed=2)
    at, drawn, stopped = _first_stops(votes, 0.6)
    assert _errors(at, drawn, stopped, 0.6, None, limit_refers=True) <= DELTA + SLACK
    assert stopped.float().mean() > 0.9


@pytest.mark.parametrize("tau", [0.3, 0.6])
def test_at_the_band_edge_refers_wrongly_at_most_delta(tau):
    """Class 0 at exactly the share whose entropy is the threshold: the limit is accepted (entropy <= tau), so a
    futility stop is wrong; a leader stop is right only on class 0."""
    p = _edge_share(tau)
    votes = _paths(torch.tensor([[p, 1 - p]]).expand(HORIZON, 2), seed=3)
    at, drawn, stopped = _first_stops(votes, tau)
    assert _errors(at, drawn, stopped, tau, 0, limit_refers=False) <= DELTA + SLACK


def test_just_inside_and_just_outside_the_band():
    tau = 0.5
    for p, refers, seed in [(_edge_share(tau) - 0.02, True, 4), (_edge_share(tau) + 0.02, False, 5)]:
        votes = _paths(torch.tensor([[p, 1 - p]]).expand(HORIZON, 2), seed=seed)
        at, drawn, stopped = _first_stops(votes, tau)
        assert _errors(at, drawn, stopped, tau, 0, limit_refers=refers) <= DELTA + SLACK, p


@pytest.mark.parametrize("average", ["tie", "edge"])
def test_stratified_draws_keep_the_guarantee_on_block_boundaries(average):
    """Stratified t: a block of 8 draws gives each stratum one draw, the vote probability depends strongly on the
    stratum (0.1 to 0.9 around the average), and the rule looks at block ends only."""
    tau, k = 0.5, 8
    mean = 0.5 if average == "tie" else _edge_share(tau)
    spread = torch.linspace(-0.4, 0.4, k) * (min(mean, 1 - mean) / 0.5)
    p0 = (mean + spread).repeat(HORIZON // k + 1)[:HORIZON]
    votes = _paths(torch.stack([p0, 1 - p0], 1), seed=6)
    at, drawn, stopped = _first_stops(votes, tau, chunk=k)
    if average == "tie":
        assert _errors(at, drawn, stopped, tau, None, limit_refers=True) <= DELTA + SLACK
    else:
        assert _errors(at, drawn, stopped, tau, 0, limit_refers=False) <= DELTA + SLACK


def test_beta_mixture_sequence_covers_the_share_at_all_times():
    """Ville: the true share leaves the sequence at some draw in at most delta of the runs."""
    gen = torch.Generator().manual_seed(7)
    for p in (0.5, 0.8, 0.97):
        k = (torch.rand(RUNS, HORIZON, generator=gen) < p).long().cumsum(1).numpy()
        n = np.broadcast_to(np.arange(1, HORIZON + 1), k.shape)
        lo, hi = beta_mixture_cs(k.ravel(), n.ravel(), DELTA)
        missed = ((lo > p) | (hi < p)).reshape(RUNS, HORIZON).any(1).mean()
        assert missed <= DELTA + SLACK, p
        # it holds the point estimate and shrinks
        est = k.ravel() / n.ravel()
        assert ((lo <= est + 1e-12) & (est <= hi + 1e-12)).all()
    lo, hi = beta_mixture_cs(np.array([50, 500]), np.array([100, 1000]), 0.01)
    assert hi[1] - lo[1] < hi[0] - lo[0]


def test_min_box_entropy_is_the_minimum_over_the_box():
    rng = np.random.default_rng(0)
    for c in (2, 3, 4):
        centre = rng.dirichlet(np.ones(c), size=20)
        lo, hi = np.clip(centre - 0.1, 0, 1), np.clip(centre + 0.1, 0, 1)
        got = min_box_entropy(lo, hi)
        # no sampled feasible point has a lower entropy
        for b in range(20):
            pts = rng.uniform(lo[b], hi[b], size=(20000, c))
            pts[:, -1] = 1 - pts[:, :-1].sum(1)
            ok = (pts[:, -1] >= lo[b, -1]) & (pts[:, -1] <= hi[b, -1])
            if ok.any():
                ent = probability_entropy(torch.from_numpy(pts[ok])).double().numpy()
                assert got[b] <= ent.min() + 1e-6
    # two classes: the smaller end's entropy
    assert min_box_entropy(np.array([[0.3, 0.6]]), np.array([[0.4, 0.7]]))[0] == pytest.approx(
        float(probability_entropy(torch.tensor([[0.3, 0.7]]))), abs=1e-6)
    # an empty box (bounds that cannot sum to one) never settles a referral
    assert min_box_entropy(np.array([[0.7, 0.7]]), np.array([[0.8, 0.8]]))[0] == -np.inf


def test_futility_needs_a_threshold_and_a_refer_everything_referral_settles_at_once():
    votes, drawn = torch.tensor([[3, 2]]), torch.tensor([5])
    with pytest.raises(ValueError, match="referral threshold"):
        should_stop(votes, drawn, 501, "futility", 0.01, 8)
    assert should_stop(votes, drawn, 501, "futility", 0.01, 8, refer_above=float("-inf")).item()
    # the other rules ignore the threshold
    assert should_stop(votes, drawn, 501, "mixture", 0.01, 8, refer_above=0.5).item() is False
