"""The method registry: the config string ``method`` picks a training loop, and a checkpoint's metadata ``kind`` picks
the predictor that scores it (batch scoring, Ray Data actors, the Serve endpoint and the benchmark all go through it).

Entries name their objects as ``"module:attribute"`` strings, imported on first use, so reading a config never imports
torch, diffusers or timm. A method's own settings live in ``ExperimentConfig.method_options`` and are validated by the
method's module (a frozen dataclass built with ``meddiff.config.from_dict``).

To add a method: write its module(s), then add one ``Method`` line below. Its training function has the signature
``train(cfg: ExperimentConfig, context: LocalContext | None = None) -> Path | None`` (the bundle on rank 0) and its
predictor class offers ``from_checkpoint(path, ScoreConfig)``, ``class_names``, ``model_id``, ``metadata``, ``method``,
``decoder``, ``predict_pixels(pixels, ids)`` and ``predict_rows(rows)`` returning rows of ``meddiff.scoring.schema``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from meddiff.errors import CheckpointError, ConfigError


@dataclass(frozen=True)
class Method:
    """name: the config ``method`` string and the checkpoint ``kind``; votes: whether its rows carry majority votes
    over noise draws (pred_vote/pred_average/votes), which the vote-vs-average ablations need."""

    name: str
    train: str
    predictor: str
    votes: bool
    description: str


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("diffusion", "meddiff.train.loop:train_diffusion", "meddiff.scoring.predictor:DiffusionPredictor", True,
               "conditional diffusion model as a majority-vote classifier (Favero et al.)"),
        Method("baseline", "meddiff.train.baseline_loop:train_baseline", "meddiff.scoring.predictor:BaselinePredictor",
               False, "discriminative timm classifier with the paper's augmentations"),
        Method("dcube", "meddiff.methods.dcube.loop:train_dcube", "meddiff.methods.dcube.predictor:DCubePredictor",
               False, "D-Cube: light classifier on KS-selected hyper-features of a frozen diffusion model (Jang et al.)"),
        Method("mediffusion", "meddiff.methods.mediffusion:train_mediffusion",
               "meddiff.methods.mediffusion:MediffusionPredictor", False,
               "Mediffusion: one UNet for denoising and a classifier head, semi-supervised joint training"),
        Method("didicm", "meddiff.methods.didicm:train_didicm", "meddiff.methods.didicm:DiDiCMPredictor", False,
               "DiDiCM: discrete diffusion over the class label given the image (probabilities or label chains)"),
        Method("sd", "meddiff.methods.sd:train_sd", "meddiff.methods.sd:SDPredictor", True,
               "Stable Diffusion fine-tuned on class prompts, latent eps errors with majority vote (Favero et al.)"),
    )
}


def _resolve(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ConfigError(f"method: unknown method {name!r}; known methods are {sorted(METHODS)}")
    return METHODS[name]


def train_function(name: str):
    """The training loop of method ``name``."""
    return _resolve(get_method(name).train)


def predictor_class(kind: str, where: str = "checkpoint"):
    """The predictor class for a checkpoint whose metadata ``kind`` is ``kind``."""
    if kind not in METHODS:
        raise CheckpointError(f"{where}: checkpoint kind {kind!r} has no predictor; known kinds are {sorted(METHODS)}")
    return _resolve(METHODS[kind].predictor)
