"""Every registered denoiser: builds from config, maps [B, C, H, W] -> [B, C, H, W], uses the class, rejects bad sizes."""

import pytest
import torch

from meddiff.config import ModelConfig
from meddiff.errors import ConfigError
from meddiff.models import MODELS, count_parameters, create_denoiser

TINY = {
    "unet": [
        {"block_out_channels": [16, 32], "attention": [False, True], "norm_num_groups": 8},
        {"block_out_channels": [16, 32], "attention": [False, True], "norm_num_groups": 8,
         "conditioning": "cross_attention", "cross_attention_dim": 32},
    ],
    "dit": [{"num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 16, "patch_size": 2}],
}


def test_every_registered_model_has_a_tiny_case():
    assert set(TINY) == set(MODELS)


@pytest.mark.parametrize("name,params", [(n, p) for n, ps in TINY.items() for p in ps])
def test_forward_shape_and_class_dependence(name, params):
    torch.manual_seed(0)
    net = create_denoiser(ModelConfig(name, params), in_channels=4, sample_size=8, num_classes=2).eval()
    assert count_parameters(net) > 0
    # zero-initialised output layers (adaLN-Zero, diffusers conv_out) would hide the class: perturb all weights
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    z = torch.randn(3, 4, 8, 8)
    time = torch.tensor([-5.0, 0.0, 5.0])
    out0 = net(z, time, torch.tensor([0, 0, 0]))
    out1 = net(z, time, torch.tensor([1, 1, 1]))
    null = net(z, time, torch.tensor([2, 2, 2]))  # the null class of classifier-free guidance
    assert out0.shape == z.shape
    assert not torch.allclose(out0, out1) and not torch.allclose(out0, null)
    # batch elements are independent
    single = net(z[1:2], time[1:2], torch.tensor([1]))
    assert torch.allclose(single, out1[1:2], atol=1e-5)


def test_dit_builtin_label_dropout_is_off():
    net = create_denoiser(ModelConfig("dit", TINY["dit"][0]), 4, 8, 2).train()
    z, time, y = torch.randn(64, 4, 8, 8), torch.zeros(64), torch.zeros(64, dtype=torch.long)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
        torch.manual_seed(0)
        a = net(z, time, y)
        torch.manual_seed(1)
        b = net(z, time, y)
    assert torch.allclose(a, b)  # no random label replacement between calls


def test_bad_configs_are_explicit():
    with pytest.raises(ConfigError, match="unknown model"):
        create_denoiser(ModelConfig("resnet9000", {}), 1, 8, 2)
    with pytest.raises(ConfigError, match="unknown key"):
        create_denoiser(ModelConfig("unet", {"channels": 3}), 1, 8, 2)
    with pytest.raises(ConfigError, match="divisible"):
        create_denoiser(ModelConfig("unet", {"block_out_channels": [8, 8, 8, 8], "attention": [False] * 4}), 1, 12, 2)
    with pytest.raises(ConfigError, match="one flag per level"):
        create_denoiser(ModelConfig("unet", {"block_out_channels": [8, 8], "attention": [True]}), 1, 8, 2)
