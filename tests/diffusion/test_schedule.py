import math

import pytest
import torch

from meddiff.config import DiffusionConfig
from meddiff.diffusion.schedule import ShiftedCosineSchedule, alpha_sigma, schedule_from_config


def test_endpoints_match_the_unshifted_range_plus_shift():
    s = ShiftedCosineSchedule(image_size=256)
    ends = s.logsnr(torch.tensor([0.0, 1.0], dtype=torch.float64))
    shift = 2 * math.log(64 / 256)
    assert s.shift == pytest.approx(shift)
    assert ends[0].item() == pytest.approx(15 + shift, abs=1e-6)
    assert ends[1].item() == pytest.approx(-15 + shift, abs=1e-6)


def test_monotone_decreasing():
    s = ShiftedCosineSchedule(image_size=32)
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    lam = s.logsnr(t)
    assert torch.all(lam[1:] < lam[:-1])


def test_alpha_sigma_variance_preserving():
    s = ShiftedCosineSchedule(image_size=64)
    alpha, sigma = alpha_sigma(s.logsnr(torch.rand(1000, dtype=torch.float64)))
    assert torch.allclose(alpha**2 + sigma**2, torch.ones_like(alpha), atol=1e-12)
    # log-SNR is log(alpha^2 / sigma^2)
    lam = s.logsnr(torch.tensor([0.3], dtype=torch.float64))
    a, sg = alpha_sigma(lam)
    assert torch.log(a**2 / sg**2).item() == pytest.approx(lam.item(), abs=1e-9)


def test_shift_moves_the_curve_by_two_log_ratio():
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    base = ShiftedCosineSchedule(image_size=64).logsnr(t)  # no shift at d = base
    small = ShiftedCosineSchedule(image_size=32).logsnr(t)
    large = ShiftedCosineSchedule(image_size=256).logsnr(t)
    assert torch.allclose(small - base, torch.full_like(t, 2 * math.log(2)))
    assert torch.allclose(large - base, torch.full_like(t, -2 * math.log(4)))
    # the unshifted schedule is the cosine schedule: lambda = -2 log tan(pi t / 2) in the interior
    s = ShiftedCosineSchedule(image_size=64)
    mid = torch.tensor([0.5], dtype=torch.float64)
    expected = -2 * math.log(math.tan(s.t_min + 0.5 * (s.t_max - s.t_min)))
    assert s.logsnr(mid).item() == pytest.approx(expected)


def test_inverse():
    s = ShiftedCosineSchedule(image_size=48)
    t = torch.rand(100, dtype=torch.float64)
    assert torch.allclose(s.t_of_logsnr(s.logsnr(t)), t, atol=1e-9)


def test_config_shift_size_overrides_image_side():
    cfg = DiffusionConfig(shift_size=256)
    assert schedule_from_config(cfg, image_size=32).image_size == 256
    assert schedule_from_config(DiffusionConfig(), image_size=32).image_size == 32
