"""Every registered baseline: builds from config (tiny variant), maps [B, C, S, S] -> [B, classes] logits; strict local
weights loading; clear config errors."""

import pytest
import torch
from safetensors.torch import save_file

from meddiff.config import ModelConfig, from_dict, to_dict
from meddiff.errors import CheckpointError, ConfigError
from meddiff.models import BASELINES, create_baseline

TINY_VIT = {"patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 2}
TINY = {
    "resnet18": {},
    "resnet50": {},
    "efficientnet_b0": {},
    "efficientnet_b4": {},
    "vit_s16": dict(TINY_VIT, img_size=32),
    "vit_b16": TINY_VIT,  # img_size follows the image size
    "swin_b": {"img_size": 32, "patch_size": 2, "window_size": 4, "embed_dim": 32, "depths": [1, 1], "num_heads": [1, 2]},
}


@pytest.fixture(autouse=True)
def _one_thread(_small_threads):
    # tiny tensors on a shared 2-core machine: one thread does not wait for the other (conftest restores 2 afterwards)
    torch.set_num_threads(1)


def _cfg(name, weights=None, **params):
    return ModelConfig(name, {"weights": weights, "timm_kwargs": TINY[name], **params})


def _state(net):
    return {k: v.contiguous().clone() for k, v in net.state_dict().items()}


def test_every_registered_baseline_has_a_tiny_case():
    assert set(TINY) == set(BASELINES) and len(BASELINES) == 7


@pytest.mark.parametrize("name", sorted(TINY))
def test_forward_gives_logits(name):
    torch.manual_seed(0)
    in_chans = 3 if name in ("resnet50", "swin_b") else 1
    net = create_baseline(_cfg(name), in_chans=in_chans, num_classes=3, image_size=32).eval()
    x = torch.rand(2, in_chans, 32, 32) * 2 - 1
    with torch.no_grad():
        logits = net(x)
    assert logits.shape == (2, 3) and logits.dtype == torch.float32 and torch.isfinite(logits).all()
    assert not torch.allclose(logits[0], logits[1])  # the logits depend on the image


def test_timm_names_are_aliases_and_config_round_trips():
    # a config saved as JSON (tuples become lists) rebuilds the same architecture
    cfg = ModelConfig("swin_base_patch4_window7_224", {"timm_kwargs": dict(TINY["swin_b"], depths=(1, 1))})
    net = create_baseline(cfg, 1, 2, 32)
    again = create_baseline(from_dict(ModelConfig, to_dict(cfg)), 1, 2, 32)
    assert {k: v.shape for k, v in net.state_dict().items()} == {k: v.shape for k, v in again.state_dict().items()}


def test_config_errors_are_explicit():
    with pytest.raises(ConfigError, match=r"unknown baseline 'resnet34'.*'efficientnet_b0'.*'vit_s16'"):
        create_baseline(ModelConfig("resnet34"), 1, 2, 32)
    with pytest.raises(ConfigError, match="unknown key.*'dropout'"):
        create_baseline(ModelConfig("resnet18", {"dropout": 0.1}), 1, 2, 32)
    with pytest.raises(ConfigError, match=r"\['num_classes', 'pretrained'\] are set by meddiff"):
        create_baseline(ModelConfig("resnet18", {"timm_kwargs": {"pretrained": True, "num_classes": 5}}), 1, 2, 32)
    with pytest.raises(ConfigError, match="img_size = 64 but data.image_size = 32"):
        create_baseline(ModelConfig("vit_s16", {"timm_kwargs": dict(TINY_VIT, img_size=64)}), 1, 2, 32)
    with pytest.raises(ConfigError, match="rejected them.*img_size"):
        create_baseline(ModelConfig("resnet18", {"timm_kwargs": {"img_size": 32}}), 1, 2, 32)
    with pytest.raises(ConfigError, match="reset_head: true needs model.params.weights"):
        create_baseline(ModelConfig("resnet18", {"reset_head": True}), 1, 2, 32)


def test_local_safetensors_weights_are_loaded_strictly(tmp_path):
    torch.manual_seed(0)
    source = create_baseline(_cfg("vit_s16"), 1, 2, 32)
    path = tmp_path / "vit.safetensors"
    save_file(_state(source), str(path))
    torch.manual_seed(1)  # a different random init, replaced by the file
    loaded = create_baseline(_cfg("vit_s16", weights=str(path)), 1, 2, 32)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    # load_weights=False (rebuilding a checkpoint) never reads the file
    fresh = create_baseline(_cfg("vit_s16", weights=str(tmp_path / "gone.safetensors")), 1, 2, 32, load_weights=False)
    assert not torch.equal(fresh.state_dict()["pos_embed"], source.state_dict()["pos_embed"])


def test_weights_mismatch_and_reset_head(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "ten_classes.safetensors"
    source = create_baseline(_cfg("vit_s16"), 1, 10, 32)
    save_file(_state(source), str(path))
    # only the head differs: the error says so and names the fix
    with pytest.raises(CheckpointError, match=r"head.weight: file \(10, 64\) vs model \(2, 64\).*reset_head: true"):
        create_baseline(_cfg("vit_s16", weights=str(path)), 1, 2, 32)
    net = create_baseline(_cfg("vit_s16", weights=str(path), reset_head=True), 1, 2, 32)
    assert torch.equal(net.state_dict()["blocks.0.attn.qkv.weight"], source.state_dict()["blocks.0.attn.qkv.weight"])
    assert net.state_dict()["head.weight"].shape == (2, 64)
    # another architecture: missing / unexpected keys are named, reset_head does not hide them
    with pytest.raises(CheckpointError, match=r"unexpected \['blocks.1.attn.proj.bias'.*another architecture"):
        create_baseline(ModelConfig("vit_s16", {"weights": str(path), "reset_head": True,
                                                "timm_kwargs": dict(TINY_VIT, depth=1)}), 1, 2, 32)
    with pytest.raises(CheckpointError, match="in_chans|shape mismatches.*patch_embed"):
        create_baseline(_cfg("vit_s16", weights=str(path), reset_head=True), 3, 2, 32)
    with pytest.raises(ConfigError, match="not a .safetensors file.*never unpickles"):
        create_baseline(_cfg("vit_s16", weights=str(tmp_path / "w.pth")), 1, 2, 32)
    with pytest.raises(ConfigError, match="does not exist"):
        create_baseline(_cfg("vit_s16", weights=str(tmp_path / "nope.safetensors")), 1, 2, 32)
