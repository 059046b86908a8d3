"""The paper's training augmentations for the discriminative baselines (Appendix B.2), as batched tensor functions.

    1. random rotation, angle uniform in (-30, 30) degrees (counter-clockwise for positive angles);
    2. horizontal flip with p = 0.5;
    3. vertical flip with p = 0.5;
    4. Gaussian blur, kernel 5, sigma uniform in (0.1, 2) (torchvision ``GaussianBlur``: every image is blurred, with its
       own sigma).
Each image gets its own parameters, as torchvision's per-image transforms would draw them. Every random parameter comes
from the ``torch.Generator`` passed in (on the CPU, whatever device the images are on), so the training loop's
(seed, step, rank) generator makes a resumed run augment exactly as an uninterrupted one. The deterministic parts
(``rotate``, ``gaussian_blur``) follow torchvision's tensor implementations: same sampling grid, same kernel, same
reflect padding. Images are [B, C, H, W] float in [-1, 1]; every output has the input's shape, dtype and device, and
stays in [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def rotate(x: torch.Tensor, degrees: torch.Tensor, fill: float = -1.0, interpolation: str = "nearest") -> torch.Tensor:
    """Rotate each image about its centre by its own angle (counter-clockwise for positive degrees, no expansion).

    Args:
        x: [B, C, H, W].
        degrees: [B] angles in degrees.
        fill: value of the corners that come from outside the image (-1 = black, as torchvision's 0 on [0, 1] images).
        interpolation: ``nearest`` (torchvision's RandomRotation default) or ``bilinear``.
    Returns: [B, C, H, W].
    """
    if interpolation not in ("nearest", "bilinear"):
        raise ValueError(f"interpolation: expected 'nearest' or 'bilinear', got {interpolation!r}")
    b, c, h, w = x.shape
    a = torch.deg2rad(degrees.to(device=x.device, dtype=torch.float32))
    cos, sin = torch.cos(a), torch.sin(a)
    # output pixel (u, v) samples the input at R(-angle)(u, v) in centred pixel units (y points down, so a visual
    # counter-clockwise turn); normalised coordinates scale x by w/2 and y by h/2, hence the aspect factors
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=torch.float32)
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = -sin * (h / w)
    theta[:, 1, 0] = sin * (w / h)
    theta[:, 1, 1] = cos
    grid = F.affine_grid(theta, [b, c, h, w], align_corners=False)
    # an extra all-ones channel marks which output pixels came from inside the image (torchvision's fill handling)
    ones = torch.ones(b, 1, h, w, device=x.device, dtype=torch.float32)
    out = F.grid_sample(torch.cat([x.float(), ones], dim=1), grid, mode=interpolation, padding_mode="zeros",
                        align_corners=False)
    img, mask = out[:, :c], out[:, c:].expand(-1, c, -1, -1)
    if interpolation == "nearest":
        img = torch.where(mask < 0.5, torch.full_like(img, fill), img)
    else:
        img = img * mask + (1.0 - mask) * fill
    return img.to(x.dtype)


def flip(x: torch.Tensor, which: torch.Tensor, dim: int) -> torch.Tensor:
    """Flip the images where ``which`` [B] (bool) is true along ``dim`` (-1: horizontal, -2: vertical). [B, C, H, W]."""
    mask = which.to(x.device).view(-1, *([1] * (x.dim() - 1)))
    return torch.where(mask, x.flip(dim), x)


def gaussian_kernel1d(sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """[B] sigmas -> [B, kernel_size] normalised Gaussian kernels sampled at integer offsets from the centre."""
    half = (kernel_size - 1) * 0.5
    offsets = torch.linspace(-half, half, kernel_size, device=sigma.device)
    pdf = torch.exp(-0.5 * (offsets[None, :] / sigma[:, None].float()).pow(2))
    return pdf / pdf.sum(dim=1, keepdim=True)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int = 5) -> torch.Tensor:
    """Blur each image with its own isotropic Gaussian (reflect padding, as torchvision's ``gaussian_blur``).

    Args:
        x: [B, C, H, W] with H, W > kernel_size // 2.
        sigma: [B] standard deviations in pixels.
    Returns: [B, C, H, W]; a constant image stays constant (the kernel sums to 1).
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size: expected a positive odd integer, got {kernel_size}")
    b, c, h, w = x.shape
    k1 = gaussian_kernel1d(sigma.to(x.device), kernel_size)
    k2 = k1[:, :, None] * k1[:, None, :]  # [B, k, k]
    weight = k2.repeat_interleave(c, dim=0)[:, None]  # [B * C, 1, k, k]: one kernel per (image, channel)
    pad = kernel_size // 2
    padded = F.pad(x.float().reshape(1, b * c, h, w), [pad, pad, pad, pad], mode="reflect")
    return F.conv2d(padded, weight, groups=b * c).reshape(b, c, h, w).to(x.dtype)


@dataclass(frozen=True)
class Augmentation:
    """The paper's augmentation pipeline with its parameters (defaults: Appendix B.2).

    Calling it draws, from ``generator`` and in this order, B angles, B horizontal-flip coins, B vertical-flip coins
    and B sigmas, then applies rotation, flips and blur.
    """

    degrees: float = 30.0
    hflip_p: float = 0.5
    vflip_p: float = 0.5
    blur_kernel: int = 5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    fill: float = -1.0
    interpolation: str = "nearest"

    def sample(self, batch: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The random parameters of one batch (CPU tensors): degrees [B], hflip [B] bool, vflip [B] bool, sigma [B]."""
        u = torch.rand(4, batch, generator=generator)
        lo, hi = self.blur_sigma
        return {
            "degrees": (2.0 * u[0] - 1.0) * self.degrees,
            "hflip": u[1] < self.hflip_p,
            "vflip": u[2] < self.vflip_p,
            "sigma": lo + (hi - lo) * u[3],
        }

    def apply(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Apply drawn ``params`` to [B, C, H, W] images."""
        x = rotate(x, params["degrees"], self.fill, self.interpolation)
        x = flip(x, params["hflip"], dim=-1)
        x = flip(x, params["vflip"], dim=-2)
        return gaussian_blur(x, params["sigma"], self.blur_kernel)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """[B, C, H, W] in [-1, 1] -> augmented [B, C, H, W]; ``generator`` is a CPU generator."""
        return self.apply(x, self.sample(x.shape[0], generator))


PAPER_AUGMENTATION = Augmentation()

