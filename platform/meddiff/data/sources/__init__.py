"""The source registry: name -> (params dataclass, build function), and the one factory ``build_manifest``.

A source's ``build(params, data_cfg)`` returns its rows with class names; rows of a source without official splits carry
split "" and build_manifest gives them a seeded stratified split (a stratified *group* split when the source has
groups). build_manifest owns the shared policy (ordering, derived metadata, balancing, splitting, validation, leakage
checks) so every source gets it identically.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

import numpy as np
import pandas as pd

from meddiff.config import DataConfig, from_dict
from meddiff.errors import ConfigError, DataError
from meddiff.data.derive import derive_metadata
from meddiff.data.leakage import check_leakage, summary_line
from meddiff.data.manifest import (
    SPLITS, UNSPLIT, Manifest, balance, balance_groups, group_folds, stratified_group_split, stratified_split,
)
from meddiff.data.sources import chexpert, dicom, image_csv, isic_challenge, medmnist, mimic_cxr, nih_cxr14, phantom

SOURCES: dict[str, tuple[type, Callable[[Any, DataConfig], Manifest]]] = {
    "medmnist": (medmnist.MedMNISTParams, medmnist.build),
    "image_csv": (image_csv.ImageCsvParams, image_csv.build),
    "chexpert": (chexpert.CheXpertParams, chexpert.build),
    "isic_challenge": (isic_challenge.IsicChallengeParams, isic_challenge.build),
    "phantom": (phantom.PhantomParams, phantom.build),
    "dicom": (dicom.DicomParams, dicom.build),
    "nih_cxr14": (nih_cxr14.NihCxr14Params, nih_cxr14.build),
    "mimic_cxr": (mimic_cxr.MimicCxrParams, mimic_cxr.build),
}

logger = logging.getLogger(__name__)


def build_manifest(cfg: DataConfig) -> Manifest:
    """The validated manifest ``cfg`` describes.

    1. look up ``cfg.source`` and build its params strictly from ``cfg.params``;
    2. build the rows and sort them by id (so the result does not depend on file or CSV row order); add the
       ``cfg.derive`` metadata columns (``meddiff.data.derive``);
    3. with official splits: balance each split separately when ``cfg.balance``;
       without: balance first when ``cfg.balance``, then split stratified with ``cfg.split_seed``/``split_fractions``.
       When the source has groups (``Manifest.grouping``), balancing keeps or drops whole groups (``balance_groups``)
       and the split keeps each group in one split (``stratified_group_split``); without groups both are exactly
       ``balance`` and ``stratified_split``;
    4. validate;
    5. leakage checks across splits (``cfg.leakage_check``, ``meddiff.data.leakage``) into ``Manifest.checks``.
       A group in two splits of a split made here is a bug and an error. In *official* splits (the source's own) it is
       a warning, not an error: official splits define a published benchmark, and refusing them or silently
       re-splitting would make the figures incomparable; the count travels with the manifest into the training
       bundle's metadata and the results' meta.json, so a reader sees it. Duplicates across splits are warnings too.
    """
    if cfg.source not in SOURCES:
        raise ConfigError(f"data.source: unknown source {cfg.source!r}; known sources are {sorted(SOURCES)}")
    params_cls, build = SOURCES[cfg.source]
    params = from_dict(params_cls, cfg.params, "data.params")
    raw = build(params, cfg)
    frame = raw.frame.sort_values("id", kind="stable").reset_index(drop=True)
    if frame.empty:
        raise DataError(f"data source {cfg.source!r} ({raw.name}) produced no rows; check its files and filters")
    frame = derive_metadata(frame, cfg.derive)
    official = bool((frame["split"] != UNSPLIT).any()) and not cfg.cv_folds
    if cfg.cv_folds:
        frame = cv_split(frame, cfg, len(raw.class_names), raw.has_groups)
    else:
        frame = _split(frame, cfg, len(raw.class_names), raw.name, raw.has_groups)
    manifest = dataclasses.replace(raw, frame=frame)
    manifest.validate()
    checks = check_leakage(frame, cfg.leakage_check, official_splits=official)
    _report(checks, raw.name, official)
    return dataclasses.replace(manifest, checks=checks)


def _report(checks: dict, name: str, official: bool) -> None:
    """Log the leakage report; a group across splits made here is an error, anything else across splits a warning."""
    if checks.get("level", "off") == "off":
        logger.info("%s: leakage checks off (data.leakage_check)", name)
        return
    logger.info("%s: %s", name, summary_line(checks))
    leaking = checks["groups"]["across_splits"]
    if leaking and not official:
        raise DataError(f"{name}: {leaking} group(s) fall in two splits after the group split, e.g. "
                        f"{checks['groups']['examples']}; this is a bug in the split")
    if leaking:
        logger.warning("%s: the official splits put %d group(s) in two splits, e.g. %s: test figures may be inflated",
                       name, leaking, checks["groups"]["examples"])
    for key in ("exact_duplicates", "near_duplicates"):
        if checks.get(key, {}).get("pairs_across_splits"):
            logger.warning("%s: %d %s pair(s) across splits, e.g. %s", name, checks[key]["pairs_across_splits"],
                           key.replace("_", " "), checks[key]["examples"][:3])


def _split(frame: pd.DataFrame, cfg: DataConfig, n_classes: int, name: str, grouped: bool = False) -> pd.DataFrame:
    undersample = balance_groups if grouped else balance
    has_split = frame["split"] != UNSPLIT
    if not has_split.any():
        if cfg.balance:
            frame = undersample(frame, cfg.split_seed, n_classes)
        if grouped:
            split = stratified_group_split(frame["label"].to_numpy(), frame["group"].to_numpy(), cfg.split_fractions,
                                           cfg.split_seed)
        else:
            split = stratified_split(frame["label"].to_numpy(), cfg.split_fractions, cfg.split_seed)
        return frame.assign(split=split)
    if not has_split.all():
        raise DataError(f"{name}: some rows have a split and some do not; a source must split all rows or none")
    if not cfg.balance:
        return frame
    # Each official split keeps its own class balance; the splits are never mixed.
    parts = [undersample(frame[frame["split"] == s], cfg.split_seed, n_classes)
             for s in SPLITS if (frame["split"] == s).any()]
    return pd.concat(parts).sort_values("id", kind="stable").reset_index(drop=True)


def cv_split(frame: pd.DataFrame, cfg: DataConfig, n_classes: int, grouped: bool = False) -> pd.DataFrame:
    """Cross-validation splits: all rows pooled (balanced first when ``cfg.balance``, by whole groups when ``grouped``),
    ``fold`` = stratified group fold 0..k-1 seeded by ``split_seed``; fold ``cv_fold`` is test, a stratified group part
    of the others is val. The ``group`` column is the image id when the source has no groups."""
    if cfg.balance:
        frame = (balance_groups if grouped else balance)(frame, cfg.split_seed, n_classes)
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
