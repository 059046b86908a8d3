import numpy as np
import pytest
import pywt
import torch

from meddiff.data.wavelet import haar_dwt, haar_idwt


@pytest.mark.parametrize("shape", [(1, 1, 2, 2), (3, 1, 28, 28), (2, 3, 32, 16), (4, 3, 256, 256)])
def test_equals_pywavelets(shape):
    x = torch.randn(shape, dtype=torch.float64)
    ours = haar_dwt(x).numpy()
    ca, (ch, cv, cd) = pywt.dwt2(x.numpy(), "haar", axes=(-2, -1))
    ref = np.stack([ca, ch, cv, cd], axis=2).reshape(shape[0], shape[1] * 4, shape[2] // 2, shape[3] // 2)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
    # and the inverse equals pywt.idwt2
    back = haar_idwt(torch.from_numpy(ref)).numpy()
    np.testing.assert_allclose(back, pywt.idwt2((ca, (ch, cv, cd)), "haar", axes=(-2, -1)), atol=1e-12)


def test_round_trip_and_norm_preserved():
    x = torch.randn(5, 3, 64, 48)
    y = haar_dwt(x)
    assert y.shape == (5, 12, 32, 24)
    assert torch.allclose(haar_idwt(y), x, atol=1e-6)
    assert torch.allclose(y.pow(2).sum(), x.pow(2).sum(), rtol=1e-5)  # orthonormal: noise stays unit variance


def test_paper_shape():
    assert haar_dwt(torch.zeros(1, 3, 256, 256)).shape == (1, 12, 128, 128)


def test_odd_sizes_rejected():
    with pytest.raises(ValueError, match="even"):
        haar_dwt(torch.zeros(1, 1, 27, 28))
    with pytest.raises(ValueError, match="4C"):
        haar_idwt(torch.zeros(1, 3, 4, 4))
