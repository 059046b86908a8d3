"""v-parameterisation, min-SNR loss, CFG dropout, EMA, and a tiny model overfitting a few real chest X-rays."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from meddiff.config import DiffusionConfig, ModelConfig
from meddiff.diffusion.ema import EMA
from meddiff.diffusion.engine import EngineSpec, classify
from meddiff.diffusion.loss import diffusion_loss, drop_labels, min_snr_weight
from meddiff.diffusion.model import build_diffusion_model
from meddiff.diffusion.vparam import diffuse, eps_from_v, v_target, x_from_v


def test_v_parameterisation_round_trip():
    x, eps = torch.randn(4, 2, 5, 5), torch.randn(4, 2, 5, 5)
    lam = torch.tensor([-6.0, -1.0, 2.0, 9.0])
    alpha, sigma = torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()
    z = diffuse(x, eps, alpha, sigma)
    v = v_target(x, eps, alpha, sigma)
    assert torch.allclose(x_from_v(z, v, alpha, sigma), x, atol=1e-5)
    assert torch.allclose(eps_from_v(z, v, alpha, sigma), eps, atol=1e-5)


def test_min_snr_weight():
    lam = torch.log(torch.tensor([0.5, 5.0, 50.0]))  # SNR 0.5, 5, 50 with gamma 5
    w = min_snr_weight(lam, 5.0)
    assert torch.allclose(w, torch.tensor([0.5 / 1.5, 5 / 6, 5 / 51]), atol=1e-6)


def test_cfg_dropout_rate_and_seeding():
    labels = torch.zeros(20000, dtype=torch.long)
    g = torch.Generator().manual_seed(3)
    dropped = drop_labels(labels, 0.15, num_classes=2, generator=g)
    rate = (dropped == 2).float().mean().item()
    assert 0.14 < rate < 0.16 and set(dropped.unique().tolist()) == {0, 2}
    again = drop_labels(labels, 0.15, 2, torch.Generator().manual_seed(3))
    assert torch.equal(dropped, again)
    assert torch.equal(drop_labels(labels, 0.0, 2, g), labels)


def test_loss_is_seeded_and_weighted():
    m = build_diffusion_model(ModelConfig("unet", {"block_out_channels": [8, 16], "attention": [False, False]}),
                              DiffusionConfig(), ("a", "b"), 8, 1)
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 0, 1])
    l1 = diffusion_loss(m.denoiser, x, y, m.schedule, 2, m.diffusion, torch.Generator().manual_seed(0))
    l2 = diffusion_loss(m.denoiser, x, y, m.schedule, 2, m.diffusion, torch.Generator().manual_seed(0))
    l3 = diffusion_loss(m.denoiser, x, y, m.schedule, 2, DiffusionConfig(loss_weight="none"), torch.Generator().manual_seed(0))
    assert l1.item() == l2.item() and l1.item() != l3.item()


def test_ema_warmup_and_average():
    net = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(0.0)
    ema = EMA(net, beta=0.5, warmup=2, every=1)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema.update(net, 1)  # before warm-up: nothing
    assert ema.num_updates == 0 and ema.inference_model(net) is net
    ema.update(net, 2)  # warm-up reached: copy
    assert ema.model.weight.item() == 1.0
    with torch.no_grad():
        net.weight.fill_(3.0)
    ema.update(net, 3)  # beta_1 = min(0.5, 2/11) = 0.1818...
    b = 2 / 11
    assert ema.model.weight.item() == pytest.approx(b * 1.0 + (1 - b) * 3.0)
    assert ema.inference_model(net) is ema.model


def test_tiny_model_overfits_a_few_real_images(pneumonia_npz):
    torch.manual_seed(0)
    data = np.load(pneumonia_npz)
    labels = data["train_labels"].ravel()
    idx = np.r_[np.where(labels == 0)[0][:4], np.where(labels == 1)[0][:4]]
    x = torch.tensor(data["train_images"][idx], dtype=torch.float32)[:, None] / 127.5 - 1
    x = F.interpolate(x, size=(16, 16), mode="bilinear", antialias=True)
    y = torch.tensor(labels[idx]).long()
    model = build_diffusion_model(ModelConfig("unet", {"block_out_channels": [32, 32], "attention": [False, True]}),
                                  DiffusionConfig(wavelet=True, cfg_dropout=0.0), ("normal", "pneumonia"), 16, 1)
    xm = model.to_model_space(x)
    opt = torch.optim.Adam(model.denoiser.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(250):
        loss = diffusion_loss(model.denoiser, xm, y, model.schedule, 2, model.diffusion, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-20:]) < 0.3 * np.mean(losses[:20])
    model.denoiser.eval()
    res, _, _ = classify(model.denoiser, xm, list(range(8)), 21, EngineSpec(2, model.schedule))
    assert res.pred_vote.tolist() == y.tolist()
    assert res.pred_average.tolist() == y.tolist()
