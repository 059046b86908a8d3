"""Single-stage 2-D Haar discrete wavelet transform, batched, in torch.

The paper compresses every 3 x 256 x 256 image into 12 x 128 x 128 wavelet coefficients before the denoiser and restores
pixels with the inverse transform. The transform is orthonormal, so it preserves the L2 norm (and therefore the Gaussian
noise statistics of the forward process) and is exactly invertible.

Coefficient layout matches ``pywt.dwt2(x, "haar")``: for every input channel the four sub-bands are stacked as
(cA, cH, cV, cD) -> output channels [4c, 4c + 1, 4c + 2, 4c + 3].
"""

from __future__ import annotations

import torch


def haar_dwt(x: torch.Tensor) -> torch.Tensor:
    """Forward transform.

    Args:
        x: [B, C, H, W] with even H and W.
    Returns:
        [B, 4C, H/2, W/2]: per channel (cA, cH, cV, cD), identical to pywt.dwt2(..., "haar").
    """
    if x.ndim != 4 or x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"haar_dwt expects [B, C, H, W] with even H and W, got {tuple(x.shape)}")
    a = x[..., 0::2, 0::2]  # top-left of every 2x2 block
    b = x[..., 0::2, 1::2]  # top-right
    c = x[..., 1::2, 0::2]  # bottom-left
    d = x[..., 1::2, 1::2]  # bottom-right
    ca = (a + b + c + d) / 2
    ch = (a + b - c - d) / 2  # horizontal detail: rows differ
    cv = (a - b + c - d) / 2  # vertical detail: columns differ
    cd = (a - b - c + d) / 2
    bsz, ch_in, h, w = ca.shape
    return torch.stack((ca, ch, cv, cd), dim=2).reshape(bsz, ch_in * 4, h, w)


def haar_idwt(y: torch.Tensor) -> torch.Tensor:
    """Inverse transform: [B, 4C, h, w] -> [B, C, 2h, 2w]; ``haar_idwt(haar_dwt(x)) == x`` up to float rounding."""
    if y.ndim != 4 or y.shape[1] % 4:
        raise ValueError(f"haar_idwt expects [B, 4C, h, w], got {tuple(y.shape)}")
    bsz, c4, h, w = y.shape
    bands = y.reshape(bsz, c4 // 4, 4, h, w)
    ca, ch, cv, cd = bands.unbind(dim=2)
    a = (ca + ch + cv + cd) / 2
    b = (ca + ch - cv - cd) / 2
    c = (ca - ch + cv - cd) / 2
    d = (ca - ch - cv + cd) / 2
    out = y.new_empty(bsz, c4 // 4, 2 * h, 2 * w)
    out[..., 0::2, 0::2] = a
    out[..., 0::2, 1::2] = b
    out[..., 1::2, 0::2] = c
    out[..., 1::2, 1::2] = d
    return out
