"""The paper's augmentations: shapes, range, seeded determinism, and agreement with torchvision's definitions."""

import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from meddiff.train.augment import PAPER_AUGMENTATION, Augmentation, flip, gaussian_blur, rotate
from meddiff.train.batches import step_generator


def _images(b=4, c=1, h=16, w=16, seed=0):
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_pipeline_shape_range_and_seeded_determinism():
    x = _images(8, 3)
    a = PAPER_AUGMENTATION(x, step_generator(0, 5, stream=2))
    b = PAPER_AUGMENTATION(x, step_generator(0, 5, stream=2))
    c = PAPER_AUGMENTATION(x, step_generator(0, 6, stream=2))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, x)


def test_sampled_parameters_follow_the_paper():
    params = Augmentation().sample(4000, torch.Generator().manual_seed(0))
    assert params["degrees"].abs().max() < 30 and params["degrees"].abs().max() > 29
    assert params["sigma"].min() >= 0.1 and params["sigma"].max() <= 2.0
    for key in ("hflip", "vflip"):
        assert params[key].dtype == torch.bool and 0.45 < params[key].float().mean() < 0.55
    # the flips and the angle of one image are independent draws
    assert not torch.equal(params["hflip"], params["vflip"])


def test_flips():
    x = _images(3)
    which = torch.tensor([True, False, True])
    h = flip(x, which, dim=-1)
    assert torch.equal(h[0], x[0].flip(-1)) and torch.equal(h[1], x[1]) and torch.equal(h[2], x[2].flip(-1))
    assert torch.equal(flip(x, which, dim=-2)[0], x[0].flip(-2))
    aug = Augmentation(degrees=0.0, hflip_p=1.0, vflip_p=0.0, blur_sigma=(1e-3, 1e-3))
    assert torch.allclose(aug(x, torch.Generator().manual_seed(0)), x.flip(-1))  # a tiny sigma blurs nothing
    none = Augmentation(degrees=0.0, hflip_p=0.0, vflip_p=0.0, blur_sigma=(1e-3, 1e-3))
    assert torch.allclose(none(x, torch.Generator().manual_seed(0)), x)


def test_rotation_identity_quarter_turn_and_torchvision():
    x = _images(2, 3)
    assert torch.equal(rotate(x, torch.zeros(2)), x)
    assert torch.allclose(rotate(x, torch.zeros(2), interpolation="bilinear"), x, atol=1e-6)
    # positive angles turn counter-clockwise, like torchvision and torch.rot90
    assert torch.equal(rotate(x, torch.tensor([90.0, 90.0])), torch.rot90(x, 1, dims=(-2, -1)))
    for angle in (17.0, -29.0):
        ours = rotate(x, torch.tensor([angle, angle]), fill=-1.0)
        assert torch.equal(ours, TF.rotate(x, angle, interpolation=InterpolationMode.NEAREST, fill=[-1.0]))
        ours = rotate(x, torch.tensor([angle, angle]), fill=-1.0, interpolation="bilinear")
        theirs = TF.rotate(x, angle, interpolation=InterpolationMode.BILINEAR, fill=[-1.0])
        assert torch.allclose(ours, theirs, atol=1e-5)
    # per-image angles; the corners are filled with black (-1)
    both = rotate(x, torch.tensor([0.0, 45.0]))
    assert torch.equal(both[0], x[0]) and torch.equal(both[1, :, 0, 0], torch.full((3,), -1.0))
    with pytest.raises(ValueError, match="interpolation"):
        rotate(x, torch.zeros(2), interpolation="bicubic")


def test_blur_matches_torchvision_and_keeps_constants():
    x = _images(3, 2)
    sigmas = torch.tensor([0.1, 0.8, 2.0])
    ours = gaussian_blur(x, sigmas, 5)
    for i, s in enumerate(sigmas.tolist()):
        assert torch.allclose(ours[i], TF.gaussian_blur(x[i:i + 1], [5, 5], [s, s])[0], atol=1e-6)
    const = torch.full((2, 1, 8, 8), 0.3)
    blurred = gaussian_blur(const, torch.tensor([0.5, 2.0]))
    assert torch.allclose(blurred, const, atol=1e-6) and torch.isclose(blurred.mean(), torch.tensor(0.3))
    # blurring smooths: less variance, same mean (up to the reflect border)
    assert ours[2].var() < x[2].var()
    with pytest.raises(ValueError, match="odd"):
        gaussian_blur(x, sigmas, 4)


def test_augmentation_runs_on_the_images_device_with_a_cpu_generator():
    x = _images(2).to(torch.float64)
    out = PAPER_AUGMENTATION(x, torch.Generator().manual_seed(1))
    assert out.dtype == torch.float64 and out.device == x.device
