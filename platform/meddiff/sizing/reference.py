"""Parameter counts of the production configs' networks against their reference architectures, with every
difference explained and counted (tests/sizing/test_plan.py builds each config's networks on the meta device and checks
``ours`` exactly and that the differences add up to ``ours - reference``).

References, each computed independently of meddiff's code:
- The paper's UNet and DiT: the paper's own code (Favero et al. 2025, github.com/faverogian/diffusion-classifier,
  ``models/chexpert-256-unet-dwt-healthysick.py`` and ``models/chexpert-256-dit-b4.py``): its UNet is diffusers'
  ``UNet2DConditionModel`` with cross-attention at the 16 x 16 level only (down block 4, up block 2) plus the
  cross-attention mid block at 8 x 8, and a 512 -> 512 ``text_proj`` of the class context.
- DiT-B/4 of Peebles & Xie 2023 ("Scalable Diffusion Models with Transformers", Table 4: 130 M; their
  ``models.py`` ``DiT_B_4``): 4 x 32 x 32 latents, learned sigma (8 output channels), 1000 classes + the null class,
  ONE timestep/label embedder shared by all blocks, a fixed sin-cos position embedding kept as a (frozen) parameter.
- timm / torchvision ImageNet models at 1000 classes and 224 px, as published (timm's model cards): resnet18 11.69 M,
  resnet50 25.56 M, efficientnet_b0 5.29 M, efficientnet_b4 19.34 M, vit_small_patch16_224 22.05 M,
  vit_base_patch16_224 86.57 M, swin_base_patch4_window7_224 87.77 M (exact counts below).
- Stable Diffusion 2 base (Rombach et al. 2022), as released: UNet 865.9 M, VAE 83.65 M, text encoder (OpenCLIP
  ViT-H/14 text tower, 23 layers as SD 2 uses) 340.4 M.
Networks with no published reference (DiDiCM's DiDiRN, Mediffusion's joint UNet, D-Cube's head) carry their
breakdown instead.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReferenceCount:
    """ours: parameters meddiff builds; reference: the reference architecture's count (None: no published one);
    differences: (what differs, parameters it adds (+) or removes (-)) summing to ours - reference, or for networks
    without a reference their components summing to ours."""

    title: str
    ours: int
    reference: int | None
    source: str
    differences: tuple[tuple[str, int], ...]

    @property
    def explained(self) -> int:
        return sum(n for _, n in self.differences)


def _head(features: int, classes: int = 2, reference_classes: int = 1000) -> int:
    """Parameters a Linear(features, classes) head has fewer than the 1000-class one."""
    return (features + 1) * (classes - reference_classes)


# DiT-B (hidden 768): pieces of the count
_T_MLP = (256 * 768 + 768) + (768 * 768 + 768)  # timestep embedder MLP, 787,968
_DIT_OURS_VS_PEEBLES = (
    ("a timestep MLP in each of the 12 blocks (diffusers' AdaLayerNormZero) vs one shared embedder: 11 more", 11 * _T_MLP),
    ("12 label tables of 2 classes + null vs one of 1000 classes + null", 12 * 3 * 768 - 1001 * 768),
    ("position embedding a buffer (diffusers) vs a frozen parameter (64 x 768)", -64 * 768),
    ("patch embedding from 12 wavelet channels vs 4 latent channels", (12 - 4) * 16 * 768),
    ("output: 12 channels (v only) vs 8 (eps + learned sigma) per 4 x 4 patch", (12 - 8) * 16 * 769),
)
_UNET_OURS_VS_PAPER = (
    ("cross-attention transformers at the 8 x 8 level too (down: 2, 1024 channels): the config reads cross_attn_res "
     "16 as '16 x 16 and below'; the paper's code attends at 16 x 16 only (+ the mid block)", 44_083_200),
    ("the same at the 8 x 8 level of the decoder (3 transformers)", 66_124_800),
    ("no 512 -> 512 text_proj of the class context (the paper's encoder_hid_dim_type='text_proj')", -(512 * 512 + 512)),
    ("the class context table nn.Embedding(2 + null, 512) (the paper's lives outside its UNet)", 3 * 512),
)
_PAPER_UNET = 275_840_268
_PAPER_UNET_NOTE = ("paper code: UNet2DConditionModel, 12 -> 12 channels, (128, 128, 256, 512, 1024), 2 layers per "
                    "block, cross-attention down block 4 / up block 2 + mid, cross_attention_dim 512, text_proj 512")

REFERENCES: dict[str, ReferenceCount] = {
    "paper_unet": ReferenceCount(
        "UNet, paper B.3 (12 x 128 x 128 Haar wavelets)", 385_787_148, _PAPER_UNET, _PAPER_UNET_NOTE,
        _UNET_OURS_VS_PAPER),
    "paper_dit": ReferenceCount(
        "DiT-B/4, paper B.4 (12 x 128 x 128 Haar wavelets)", 138_500_544, 130_475_648,
        "Peebles & Xie DiT_B_4 at 4 x 32 x 32, 1000 classes, learned sigma (130.5 M; the paper's code builds "
        "diffusers' DiTTransformer2DModel, per-block embedders as here)", _DIT_OURS_VS_PEEBLES),
    "resnet18": ReferenceCount("ResNet-18", 11_177_538, 11_689_512, "timm resnet18, 1000 classes",
                               (("2-class head (512 features)", _head(512)),)),
    "resnet50": ReferenceCount("ResNet-50", 23_512_130, 25_557_032, "timm resnet50, 1000 classes",
                               (("2-class head (2048 features)", _head(2048)),)),
    "efficientnet_b0": ReferenceCount("EfficientNet-B0", 4_010_110, 5_288_548, "timm efficientnet_b0, 1000 classes",
                                      (("2-class head (1280 features)", _head(1280)),)),
    "efficientnet_b4": ReferenceCount("EfficientNet-B4", 17_552_202, 19_341_616, "timm efficientnet_b4, 1000 classes",
                                      (("2-class head (1792 features)", _head(1792)),)),
    "vit_s16": ReferenceCount("ViT-S/16 at 256 px", 21_689_474, 22_050_664,
                              "timm vit_small_patch16_224, 1000 classes, 224 px",
                              (("2-class head (384 features)", _head(384)),
                               ("position embedding for 16 x 16 + 1 tokens vs 14 x 14 + 1 at 224 px", 60 * 384))),
    "vit_b16": ReferenceCount("ViT-B/16 at 256 px", 85_846_274, 86_567_656,
                              "timm vit_base_patch16_224, 1000 classes, 224 px",
                              (("2-class head (768 features)", _head(768)),
                               ("position embedding for 16 x 16 + 1 tokens vs 14 x 14 + 1 at 224 px", 60 * 768))),
    "swin_b": ReferenceCount("Swin-B at 256 px", 86_745_274, 87_768_224,
                             "timm swin_base_patch4_window7_224, 1000 classes, 224 px",
                             (("2-class head (1024 features); window 7 at 256 px keeps the relative-position tables",
                               _head(1024)),)),
    "sd_unet": ReferenceCount("Stable Diffusion 2 base UNet", 865_910_724, 865_910_724,
                              "stable-diffusion-2-base unet/config.json", ()),
    "sd_vae_encoder": ReferenceCount("SD 2 VAE encoder", 34_163_664, 83_653_863,
                                     "stable-diffusion-2-base vae/config.json (encoder + decoder)",
                                     (("the decoder and post_quant_conv: training and scoring never decode",
                                       -(49_490_179 + 20)),)),
    "sd_text_encoder": ReferenceCount("SD 2 text encoder (OpenCLIP ViT-H/14 text, 23 layers)", 340_387_840,
                                      340_387_840, "stable-diffusion-2-base text_encoder/config.json", ()),
    "didirn": ReferenceCount(
        "DiDiRN (ResNet-18 widths, FiLM)", 12_420_418, None, "no published count (Belhasin et al. give none)",
        (("time MLP (256 -> 256 -> 256)", 131_584), ("noisy-label embedding (2 x 256)", 512),
         ("stem conv 3 -> 64 + GroupNorm", 1_856), ("8 FiLM residual blocks (64, 128, 256, 512)", 12_153_856),
         ("embedding -> features (256 -> 512)", 131_584), ("head (512 -> 2)", 1_026))),
    "mediffusion_unet": ReferenceCount(
        "Mediffusion joint UNet", 256_687_886, None,
        "no published count; the paper UNet's sizes, unconditional, self-attention at 16 x 16 and 8 x 8",
        (("UNet2DModel (128, 128, 256, 512, 1024), self-attention at the two coarsest levels", 255_107_340),
         ("classifier head: LayerNorm(3072) -> 512 -> 2 on pooled down/mid features", 1_580_546))),
    "dcube_head": ReferenceCount(
        "D-Cube head on all 11 block features", 2_628_098, None,
        "no published count; sized on every candidate layer (the KS selection keeps a subset)",
        (("11 projections of the pooled block outputs (5,120 features in all) to 512", 5_120 * 512 + 11 * 512),
         ("output 512 -> 2", 512 * 2 + 2))),
}

# config file (dataset prefix dropped) -> {network name: REFERENCES key}
CONFIG_NETWORKS: dict[str, dict[str, str]] = {
    "unet-a100": {"denoiser": "paper_unet"},
    "dit-a100": {"denoiser": "paper_dit"},
    "resnet18-a100": {"classifier": "resnet18"},
    "resnet50-a100": {"classifier": "resnet50"},
    "efficientnet-b0-a100": {"classifier": "efficientnet_b0"},
    "efficientnet-b4-a100": {"classifier": "efficientnet_b4"},
    "vit-s16-a100": {"classifier": "vit_s16"},
    "vit-b16-a100": {"classifier": "vit_b16"},
    "swin-b-a100": {"classifier": "swin_b"},
    "sd-a100": {"unet": "sd_unet", "vae_encoder": "sd_vae_encoder", "text_encoder": "sd_text_encoder"},
    "didicm-a100": {"didirn": "didirn"},
    "mediffusion-a100": {"joint_unet": "mediffusion_unet"},
    "dcube-a100": {"frozen_denoiser": "paper_unet", "head": "dcube_head"},
}
DATASETS = ("chexpert-", "isic-")


def references_for(config_stem: str) -> dict[str, ReferenceCount]:
    """{network name: ReferenceCount} of a jobs/configs file (``chexpert-unet-a100``); KeyError when not listed."""
    key = config_stem
    for prefix in DATASETS:
        if key.startswith(prefix):
            key = key[len(prefix):]
    return {net: REFERENCES[ref] for net, ref in CONFIG_NETWORKS[key].items()}
