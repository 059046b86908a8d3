"""The source registry: name -> (params dataclass, build function), and the one factory ``build_manifest``.

A source's ``build(params, data_cfg)`` returns its rows with class names; rows of a source without official splits carry
split "" and build_manifest gives them a seeded stratified split. build_manifest owns the shared policy
(ordering, balancing, splitting, validation) so every source gets it identically.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
import pandas as pd

from meddiff.config import DataConfig, from_dict
from meddiff.errors import ConfigError, DataError
from meddiff.data.manifest import SPLITS, UNSPLIT, Manifest, balance, group_folds, stratified_split
from meddiff.data.sources import chexpert, image_csv, isic_challenge, medmnist, phantom

SOURCES: dict[str, tuple[type, Callable[[Any, DataConfig], Manifest]]] = {
    "medmnist": (medmnist.MedMNISTParams, medmnist.build),
    "image_csv": (image_csv.ImageCsvParams, image_csv.build),
    "chexpert": (chexpert.CheXpertParams, chexpert.build),
    "isic_challenge": (isic_challenge.IsicChallengeParams, isic_challenge.build),
    "phantom": (phantom.PhantomParams, phantom.build),
}


def build_manifest(cfg: DataConfig) -> Manifest:
    """The validated manifest ``cfg`` describes.

    1. look up ``cfg.source`` and build its params strictly from ``cfg.params``;
    2. build the rows and sort them by id (so the result does not depend on file or CSV row order);
    3. with official splits: balance each split separately when ``cfg.balance``;
       without: balance first when ``cfg.balance``, then split stratified with ``cfg.split_seed``/``split_fractions``;
    4. validate.
    """
    if cfg.source not in SOURCES:
        raise ConfigError(f"data.source: unknown source {cfg.source!r}; known sources are {sorted(SOURCES)}")
    params_cls, build = SOURCES[cfg.source]
    params = from_dict(params_cls, cfg.params, "data.params")
    raw = build(params, cfg)
    frame = raw.frame.sort_values("id", kind="stable").reset_index(drop=True)
    if frame.empty:
        raise DataError(f"data source {cfg.source!r} ({raw.name}) produced no rows; check its files and filters")
    if cfg.cv_folds:
        frame = cv_split(frame, cfg, len(raw.class_names))
    else:
        frame = _split(frame, cfg, len(raw.class_names), raw.name)
    manifest = dataclasses.replace(raw, frame=frame)
    manifest.validate()
    return manifest


def _split(frame: pd.DataFrame, cfg: DataConfig, n_classes: int, name: str) -> pd.DataFrame:
    has_split = frame["split"] != UNSPLIT
    if not has_split.any():
        if cfg.balance:
            frame = balance(frame, cfg.split_seed, n_classes)
        return frame.assign(split=stratified_split(frame["label"].to_numpy(), cfg.split_fractions, cfg.split_seed))
    if not has_split.all():
        raise DataError(f"{name}: some rows have a split and some do not; a source must split all rows or none")
    if not cfg.balance:
        return frame
    # Each official split keeps its own class balance; the splits are never mixed.
    parts = [balance(frame[frame["split"] == s], cfg.split_seed, n_classes) for s in SPLITS if (frame["split"] == s).any()]
    return pd.concat(parts).sort_values("id", kind="stable").reset_index(drop=True)


def cv_split(frame: pd.DataFrame, cfg: DataConfig, n_classes: int) -> pd.DataFrame:
    """Cross-validation splits: all rows pooled (balanced first when ``cfg.balance``), ``fold`` = stratified group fold
    0..k-1 seeded by ``split_seed``; fold ``cv_fold`` is test, a stratified group part of the others is val."""
    if cfg.balance:
        frame = balance(frame, cfg.split_seed, n_classes)
    frame = frame.reset_index(drop=True)
    folds = group_folds(frame["label"].to_numpy(), frame["group"].to_numpy(), cfg.cv_folds, cfg.split_seed)
    split = np.where(folds == cfg.cv_fold, "test", "train").astype(object)
    rest = np.flatnonzero(folds != cfg.cv_fold)
    train_frac, val_frac, _ = cfg.split_fractions
    if val_frac > 0 and len(rest):
        # val: one of round((train + val) / val) stratified group folds of the remaining rows
        k = max(2, int(round((train_frac + val_frac) / val_frac)))
        inner = group_folds(frame["label"].to_numpy()[rest], frame["group"].to_numpy()[rest], k,
                            cfg.split_seed + 1 + cfg.cv_fold)
        split[rest[inner == 0]] = "val"
    return frame.assign(split=split, fold=folds.astype(np.int64))
