"""Classifier engine: shared noise across classes, batch-size independence, both rules on crafted errors, entropy."""

import math

import pytest
import torch

from meddiff.diffusion.engine import EngineSpec, classify, count_votes, draw_errors, summarize, vote_prediction
from meddiff.diffusion.noise import draw_pairs, image_seed
from meddiff.diffusion.schedule import ShiftedCosineSchedule
from meddiff.diffusion.uncertainty import softmax_entropy, vote_entropy


class RecordingDenoiser(torch.nn.Module):
    """Deterministic toy denoiser whose output depends on the class; records every input it sees."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, z, time, labels):
        self.calls.append((z.clone(), time.clone(), labels.clone()))
        return 0.5 * z + 0.1 * labels.float().reshape(-1, 1, 1, 1) * torch.tanh(z) + 0.01 * time.reshape(-1, 1, 1, 1)


def spec(**kw):
    return EngineSpec(num_classes=3, schedule=ShiftedCosineSchedule(image_size=8), **kw)


def test_every_class_sees_the_same_noisy_input():
    net = RecordingDenoiser()
    x = torch.randn(2, 1, 8, 8)
    draw_errors(net, x, [1, 2], range(4), spec(max_batch=1000))
    z, time, labels = net.calls[0]
    assert z.shape[0] == 2 * 4 * 3
    z = z.reshape(8, 3, 1, 8, 8)  # (image, draw) x class
    assert torch.equal(z[:, 0], z[:, 1]) and torch.equal(z[:, 0], z[:, 2])
    assert torch.equal(time.reshape(8, 3)[:, 0], time.reshape(8, 3)[:, 2])
    assert labels.reshape(8, 3).tolist() == [[0, 1, 2]] * 8
    # different draws of one image have different noise
    assert not torch.equal(z[0, 0], z[1, 0])


def test_noise_depends_only_on_seed_and_image_id():
    s1, s2 = image_seed(0, "a/b/0001"), image_seed(0, "a/b/0002")
    assert s1 != s2 and image_seed(0, "a/b/0001") == s1 and image_seed(1, "a/b/0001") != s1
    t_all, e_all = draw_pairs([s1, s2], range(6), (1, 4, 4))
    t_chunk, e_chunk = draw_pairs([s2], [3, 4, 5], (1, 4, 4))
    assert torch.equal(t_all[1, 3:], t_chunk[0]) and torch.equal(e_all[1, 3:], e_chunk[0])
    assert (t_all >= 0).all() and (t_all <= 1).all()
    t_r, _ = draw_pairs([s1], range(6), (1, 4, 4), t_min=0.2, t_max=0.4)
    assert (t_r >= 0.2).all() and (t_r <= 0.4).all()


def test_results_independent_of_batch_size_order_and_micro_batching():
    torch.manual_seed(0)
    net = RecordingDenoiser()
    x = torch.randn(5, 1, 8, 8)
    seeds = [image_seed(7, f"img{i}") for i in range(5)]
    full, err_full, t_full = classify(net, x, seeds, 9, spec(max_batch=7))
    # one image at a time, in reverse order, with a different micro-batch size
    for i in reversed(range(5)):
        one, err_one, t_one = classify(net, x[i : i + 1], seeds[i : i + 1], 9, spec(max_batch=300))
        assert torch.allclose(err_one[0], err_full[i], atol=1e-6)
        assert torch.equal(t_one[0], t_full[i])
        assert one.pred_vote.item() == full.pred_vote[i].item()
    # chunked draws give the same errors as one pass
    first, _ = draw_errors(net, x, seeds, range(0, 4), spec())
    rest, _ = draw_errors(net, x, seeds, range(4, 9), spec())
    assert torch.allclose(torch.cat([first, rest], dim=2), err_full, atol=1e-6)


def test_vote_and_average_on_crafted_errors():
    # image 0: class 1 wins 3 of 5 draws by a little, class 0 wins 2 draws by a lot -> vote 1, average 0
    e0 = torch.tensor([[1.0, 1.0, 1.0, 0.1, 0.1], [0.9, 0.9, 0.9, 5.0, 5.0]])
    # image 1: class 0 wins every draw
    e1 = torch.tensor([[0.1, 0.2, 0.3, 0.1, 0.2], [1.0, 1.0, 1.0, 1.0, 1.0]])
    res = summarize(torch.stack([e0, e1]))
    assert res.votes.tolist() == [[2, 3], [5, 0]]
    assert res.pred_vote.tolist() == [1, 0]
    assert res.pred_average.tolist() == [0, 0]
    assert res.mean_error[0].tolist() == pytest.approx([0.64, 2.54])
    p = torch.tensor([0.4, 0.6])
    assert res.uncertainty[0].item() == pytest.approx(float(-(p * p.log()).sum() / math.log(2)), abs=1e-6)
    assert res.uncertainty[1].item() == pytest.approx(0.0)


def test_vote_ties_go_to_lower_mean_error():
    votes = torch.tensor([[2, 2, 1]])
    mean_error = torch.tensor([[0.5, 0.3, 0.1]])
    assert vote_prediction(votes, mean_error).item() == 1  # class 2 has the lowest error but fewer votes


def test_count_votes_three_classes():
    errors = torch.tensor([[[3.0, 1.0, 2.0, 0.0], [1.0, 3.0, 2.0, 1.0], [2.0, 2.0, 1.0, 5.0]]])
    assert count_votes(errors).tolist() == [[2, 1, 1]]


def test_entropy_values():
    assert vote_entropy(torch.tensor([[10, 0]])).item() == pytest.approx(0.0)
    assert vote_entropy(torch.tensor([[5, 5]])).item() == pytest.approx(1.0)
    assert vote_entropy(torch.tensor([[4, 4, 4]])).item() == pytest.approx(1.0)
    assert vote_entropy(torch.tensor([[3, 1]])).item() == pytest.approx(0.8112781, abs=1e-6)  # H(0.75) in bits
    assert softmax_entropy(torch.tensor([[0.0, 0.0]])).item() == pytest.approx(1.0)
    assert softmax_entropy(torch.tensor([[50.0, -50.0]])).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("target", ["eps", "x", "v"])
def test_perfect_denoiser_has_zero_error_for_the_true_target(target):
    """A denoiser that outputs the exact v makes every target's error ~0 (checks the conversions)."""
    x = torch.randn(2, 1, 8, 8)
    seeds = [1, 2]
    sp = spec(error_target=target)
    t, eps = draw_pairs(seeds, range(3), (1, 8, 8))
    from meddiff.diffusion.schedule import alpha_sigma

    a, s = alpha_sigma(sp.schedule.logsnr(t))
    v_true = (a[..., None, None, None] * eps - s[..., None, None, None] * x[:, None]).reshape(6 * 1, 1, 8, 8)

    class Oracle(torch.nn.Module):
        def forward(self, z, time, labels):
            return v_true.repeat_interleave(3, dim=0)[: z.shape[0]]

    errors, _ = draw_errors(Oracle(), x, seeds, range(3), EngineSpec(3, sp.schedule, error_target=target, max_batch=10**6))
    assert errors.max().item() < 1e-8
