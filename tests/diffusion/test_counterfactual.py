"""Counterfactual sampler: determinism, t_start = 0, w = 0 equals a plain conditional sampler, guidance, clipping."""

import pytest
import torch

from meddiff.errors import ConfigError

from meddiff.config import DiffusionConfig, ModelConfig
from meddiff.diffusion.counterfactual import CounterfactualSampler, guided_x_hat, step_noise
from meddiff.diffusion.model import DiffusionModel
from meddiff.diffusion.noise import image_seed
from meddiff.diffusion.schedule import ShiftedCosineSchedule, alpha_sigma


class ToyDenoiser(torch.nn.Module):
    """Deterministic class-dependent v-predictor (null class = 2 pulls to 0)."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(0.3))
        self.rows = []

    def forward(self, z, time, labels):
        self.rows.append(len(z))
        shift = torch.tensor([-0.4, 0.4, 0.0])[labels].reshape(-1, 1, 1, 1)
        return self.scale * z + shift * torch.tanh(z) + 0.01 * time.reshape(-1, 1, 1, 1)


def toy_model(wavelet: bool) -> DiffusionModel:
    return DiffusionModel(denoiser=ToyDenoiser(), schedule=ShiftedCosineSchedule(image_size=8),
                          diffusion=DiffusionConfig(wavelet=wavelet), model_cfg=ModelConfig(),
                          class_names=("normal", "sick"), image_size=8, channels=1)


def images(n: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 8, 8, generator=g) * 2 - 1


def test_same_seed_same_image_whatever_the_batch():
    model, x, ids = toy_model(True), images(3), ["a", "b", "c"]
    sampler = CounterfactualSampler(t_start=0.5, steps=6, guidance=2.0, seed=3)
    full = sampler(model, x, ids)
    assert full.reconstructions.shape == (3, 2, 1, 8, 8) and full.errors.shape == (3, 2)
    again = sampler(model, x, ids)
    assert torch.equal(full.reconstructions, again.reconstructions)
    for i in reversed(range(3)):  # one image at a time, reverse order, tiny forward chunks
        one = CounterfactualSampler(t_start=0.5, steps=6, guidance=2.0, seed=3, max_batch=1)(model, x[i:i + 1], ids[i:i + 1])
        assert torch.allclose(one.reconstructions[0], full.reconstructions[i], atol=1e-6)
    other = CounterfactualSampler(t_start=0.5, steps=6, guidance=2.0, seed=4)(model, x, ids)
    assert not torch.allclose(other.reconstructions, full.reconstructions)
    # errors are the pixel MSE of the reconstruction; differences are signed reconstruction - input
    assert torch.allclose(full.errors, (full.reconstructions - x[:, None]).pow(2).mean(dim=(2, 3, 4)))
    assert torch.allclose(full.differences, full.reconstructions - x[:, None])


def test_one_forward_per_step_with_every_class_and_the_null_class():
    model, x = toy_model(True), images(3)
    CounterfactualSampler(t_start=0.4, steps=5, guidance=1.0)(model, x, ["a", "b", "c"])
    assert model.denoiser.rows == [3 * 2 * 2] * 5  # B x K classes x (class, null), once per step
    model.denoiser.rows.clear()
    CounterfactualSampler(t_start=0.4, steps=5, guidance=0.0)(model, x, ["a", "b", "c"])
    assert model.denoiser.rows == [3 * 2] * 5  # w = 0: no null-class rows


@pytest.mark.parametrize("wavelet", [True, False])
def test_t_start_zero_returns_the_input(wavelet):
    model, x = toy_model(wavelet), images(2)
    out = CounterfactualSampler(t_start=0.0, steps=10, guidance=7.5)(model, x, ["a", "b"])
    assert torch.allclose(out.reconstructions, x[:, None].expand(2, 2, 1, 8, 8), atol=1e-6)
    assert out.errors.abs().max() < 1e-10
    assert model.denoiser.rows == []


def reference_conditional_sampler(model, x, image_id, cls, t_start, steps, seed):
    """The authors' ancestral sampler written out for one image and one class, without guidance."""
    sched = model.schedule
    ts = torch.linspace(t_start, 0.0, steps + 1, dtype=torch.float64)
    lam = sched.logsnr(ts)
    s = image_seed(seed, image_id)
    xm = model.to_model_space(x[None])
    a, sg = alpha_sigma(lam[0].float())
    z = a * xm + sg * step_noise([s], 0, tuple(xm.shape[1:]), torch.device("cpu"))
    for i in range(steps):
        a_t, s_t = alpha_sigma(lam[i].float())
        a_s, s_s = alpha_sigma(lam[i + 1].float())
        v = model.denoiser(z, lam[i].float().reshape(1), torch.tensor([cls]))
        x_hat = a_t * z - s_t * v
        x_hat = model.to_model_space(model.to_pixels(x_hat).clamp(-1, 1))
        c = -torch.expm1(lam[i].float() - lam[i + 1].float())
        z = a_s * (z * (1 - c) / a_t + c * x_hat)
        if i < steps - 1:
            z = z + torch.sqrt(s_s ** 2 * c) * step_noise([s], i + 1, tuple(xm.shape[1:]), torch.device("cpu"))
    return model.to_pixels(z)[0]


def test_w_zero_equals_the_plain_conditional_sampler():
    model, x, ids = toy_model(True), images(2), ["p", "q"]
    out = CounterfactualSampler(t_start=0.6, steps=7, guidance=0.0, seed=1)(model, x, ids)
    with torch.no_grad():
        for b in range(2):
            for k in range(2):
                ref = reference_conditional_sampler(model, x[b], ids[b], k, 0.6, 7, 1)
                assert torch.allclose(out.reconstructions[b, k], ref, atol=1e-5)


def test_guidance_moves_classes_apart_and_reconstructions_stay_in_range():
    model, x, ids = toy_model(True), images(2), ["p", "q"]
    plain = CounterfactualSampler(t_start=0.7, steps=8, guidance=0.0)(model, x, ids)
    guided = CounterfactualSampler(t_start=0.7, steps=8, guidance=4.0)(model, x, ids)
    gap = lambda r: (r.reconstructions[:, 1] - r.reconstructions[:, 0]).abs().mean()
    assert gap(guided) > gap(plain)
    assert guided.reconstructions.min() >= -1 - 1e-5 and guided.reconstructions.max() <= 1 + 1e-5
    assert torch.equal(guided_x_hat(torch.ones(2), torch.zeros(2), 0.0), torch.ones(2))
    assert torch.allclose(guided_x_hat(torch.ones(2), torch.zeros(2), 7.5), torch.full((2,), 8.5))


def test_bad_settings_are_clear_errors():
    with pytest.raises(ConfigError, match="explain.t_start: expected a value in"):
        CounterfactualSampler(t_start=1.5)
    with pytest.raises(ConfigError, match="explain.steps"):
        CounterfactualSampler(steps=0)
    with pytest.raises(ConfigError, match="explain.guidance"):
        CounterfactualSampler(guidance=-1)
    with pytest.raises(ConfigError, match="out of range"):
        CounterfactualSampler(steps=2)(toy_model(False), images(1), ["a"], classes=[5])
