"""Footprint measures against hand counts, and CPU against the meta device."""

import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from meddiff.config import ModelConfig
from meddiff.models import create_denoiser
from meddiff.sizing.footprint import flops_per_forward, inference_peak_bytes, measure_network, saved_bytes


def conv_linear(device):
    with torch.device(device):
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16 * 16, 10))


def mlp(device):
    with torch.device(device):
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("batch", [1, 3])
def test_flops_match_a_hand_count(device, batch):
    x = torch.randn(batch, 3, 16, 16, device=device)
    conv = 2 * batch * (8 * 16 * 16) * (3 * 3 * 3)  # 2 FLOPs per multiply-add, per output element 27 of them
    linear = 2 * batch * (8 * 16 * 16) * 10
    assert flops_per_forward(conv_linear(device), (x,)) == conv + linear  # biases and ReLU are not counted


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("dtype,size", [(torch.float32, 4), (torch.bfloat16, 2)])
def test_activation_bytes_match_a_hand_count(device, dtype, size):
    net = mlp(device).to(dtype)
    for batch in (1, 3):
        x = torch.randn(batch, 4, device=device, dtype=dtype)
        # saved for backward: the first Linear's input [B, 4] and ReLU's output [B, 8] (the second Linear's input,
        # the same storage, counted once); the weights are parameters, not activations
        assert saved_bytes(net, (x,)) == batch * (4 + 8) * size
        # no_grad peak: the first Linear's output and ReLU's output [B, 8] each are alive together
        assert inference_peak_bytes(net, (x,)) == batch * (8 + 8) * size


def test_measure_network_extrapolates_per_image_and_leaves_the_model_as_it_was():
    net = mlp("meta")
    fp = measure_network(net, lambda b, d: (torch.randn(b, 4, device=d),), trained=False, score_forwards=7,
                         dtype=torch.bfloat16)
    assert fp.parameters == 4 * 8 + 8 + 8 * 3 + 3 and fp.trainable_parameters == 0
    assert fp.weight_bytes == 4 * fp.parameters
    assert fp.flops_per_forward == 2 * (4 * 8 + 8 * 3)
    assert (fp.train_activation_bytes_per_image, fp.train_activation_bytes_fixed) == (12 * 2, 0)
    assert (fp.inference_activation_bytes_per_image, fp.inference_activation_bytes_fixed) == (16 * 2, 0)
    assert fp.score_forwards == 7 and fp.dtype == "bfloat16"
    assert all(p.dtype == torch.float32 for p in net.parameters())


TINY = [ModelConfig("unet", {"block_out_channels": [16, 32], "attention": [False, True],
                             "conditioning": "cross_attention", "cross_attention_dim": 32, "norm_num_groups": 8}),
        ModelConfig("dit", {"num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 16, "patch_size": 2})]


@pytest.mark.slow  # the first diffusers import (~15 s) lands here
@pytest.mark.parametrize("model_cfg", TINY, ids=lambda m: m.name)
def test_meta_measures_equal_cpu_ones(model_cfg):
    """Memory: the same bytes on meta as on CPU (attention through the fused kernel on both). FLOPs: meta counts
    attention as the math path does on CPU (the CPU flash kernel has no formula in torch's counter)."""
    out = {}
    for device in ("cpu", "meta"):
        torch.manual_seed(0)
        with torch.device(device):
            net = create_denoiser(model_cfg, in_channels=4, sample_size=16, num_classes=2)
        x = (torch.randn(2, 4, 16, 16, device=device), torch.zeros(2, device=device),
             torch.zeros(2, dtype=torch.long, device=device))
        out[device] = (saved_bytes(net, x), inference_peak_bytes(net, x), flops_per_forward(net, x))
        if device == "cpu":
            with sdpa_kernel([SDPBackend.MATH]):
                math_flops = flops_per_forward(net, x)
    assert out["meta"][:2] == out["cpu"][:2]
    assert out["meta"][2] == math_flops
