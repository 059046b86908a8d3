"""The discriminative baseline training loop (the paper's Table 1 classifiers), on the shared loop
(``meddiff.train.loop.run_loop``) like the diffusion classifier's.

Steps (paper Appendix B.1/B.2): the paper's augmentations (when ``train.augment``), cross-entropy, Adam with
``train.lr`` / ``train.weight_decay`` (paper: 1e-4 for CNNs, 1e-5 for ViT/Swin; weight decay 1e-5 on ISIC, 1e-3 on
CheXpert for CNNs), linear LR warm-up over ``train.warmup_steps`` (0 = none), gradient clipping at ``train.grad_clip``
(0 = none). The EMA settings do not apply: the bundle holds the trained weights themselves.
Progress lines carry loss, batch accuracy, LR, steps/s and ETA; every ``log_every`` steps a JSON line goes to
``metrics.jsonl``; every ``checkpoint_every`` steps and at the end the val split is classified (one forward pass),
its accuracy logged, written to metrics.jsonl and stored in the bundle's metadata; at the end ``loss.png`` shows the
training loss and the val accuracy. Re-running with the same ``output_dir/name`` resumes from the newest bundle
(same data, model and augmentation config required).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from meddiff.config import ExperimentConfig
from meddiff.train.loop import evaluate, run_loop, seeded_init, setup_run, val_batches
from meddiff.models.baseline_model import KIND, build_baseline_model
from meddiff.train.augment import PAPER_AUGMENTATION
from meddiff.train.batches import step_generator
from meddiff.train.context import LocalContext

AUGMENT_STREAM = 2  # step_generator streams: 0 = noise (diffusion), 1 = batch indices, 2 = augmentation parameters


def train_baseline(cfg: ExperimentConfig, context: LocalContext | None = None) -> Path:
    """Train (or resume) the baseline run ``cfg.output_dir/cfg.name``; returns the final bundle's path."""
    setup = setup_run(cfg, context, KIND)
    tc, device, rank = cfg.train, setup.device, setup.ctx.rank
    with seeded_init(tc.seed):
        model = build_baseline_model(cfg.model, setup.manifest.class_names, cfg.data.image_size, cfg.data.channels)
    network = model.network.to(device)
    if device.type == "cuda":
        network = network.to(memory_format=torch.channels_last)
    if setup.ctx.is_main:
        setup.ctx.log(f"[train] augmentation {'on' if tc.augment else 'off'}")

    def step(net: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int) -> dict:
        if tc.augment:
            # parameters from the (seed, step, rank) CPU stream: a resumed run augments as an uninterrupted one
            x = PAPER_AUGMENTATION(x, step_generator(tc.seed, step, rank, "cpu", stream=AUGMENT_STREAM))
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        logits = net(x)
        # a tensor: run_loop reads it with the loss, no extra device sync here
        return {"loss": F.cross_entropy(logits.float(), y), "acc": (logits.argmax(dim=1) == y).float().mean().detach()}

    validate = _validator(setup) if setup.ctx.is_main and len(setup.val_m) else None
    return run_loop(setup, network, step, model.metadata_fields(), validate=validate, loss_label="cross-entropy")


def _validator(setup):
    """(inference network) -> val accuracy and loss over the val split (rank 0; the unwrapped network: a DDP forward
    on rank 0 alone would wait for the other ranks)."""
    batches = val_batches(setup)

    def validate(inference: nn.Module) -> dict[str, float]:
        val = evaluate(inference, batches(), setup.device, setup.amp())
        return {"val_accuracy": val["accuracy"], "val_loss": val["loss"]}

    return validate
