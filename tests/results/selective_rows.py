"""A synthetic scored results folder for the selective-prediction tests: binary vote shares over 21 draws (many
uncertainty ties at 0), labelled, with patient groups of two images and val/test splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from meddiff.results import schema as S

CLASSES = ["normal", "pneumonia"]


def write_vote_results(folder: Path, n: int = 400, seed: int = 0, model_id: str = "m-sel",
                       splits=("val", "test"), meta: dict | None = None, a: float = 3.0, b: float = 0.5) -> Path:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    share = rng.binomial(21, rng.beta(a, b, n)) / 21
    p1 = np.where(y == 1, share, 1 - share)
    rows = []
    for i in range(n):
        probs = [1 - p1[i], p1[i]]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = float(-np.nan_to_num(np.array(probs) * np.log(probs)).sum() / np.log(2))
        pred = int(p1[i] > 0.5)
        rows.append({S.IMAGE_ID: f"img{i:04d}", S.LABEL: int(y[i]), S.LABEL_NAME: CLASSES[y[i]],
                     S.SPLIT: splits[i % len(splits)], S.GROUP: f"patient{i // 2:04d}", S.METADATA: "{}",
                     S.PRED: pred, S.PRED_NAME: CLASSES[pred], S.PRED_VOTE: pred, S.PRED_AVERAGE: pred,
                     S.VOTES: [int(round(q * 21)) for q in probs], S.PROB: probs, S.UNCERTAINTY: u, S.N_DRAWS: 21,
                     S.METHOD: "diffusion", S.RULE: "vote", S.MODEL_ID: model_id, S.SEED: 0, S.STATUS: S.STATUS_OK})
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(S.to_table(rows), folder / "shard-000000.parquet")
    (folder / "meta.json").write_text(json.dumps({
        "method": "diffusion", "model_id": model_id, "class_names": CLASSES, "data": {"name": "synthetic"},
        "score_config": {"n_draws": 21, "rule": "vote", "seed": 0, "split": "all"}, **(meta or {})}))
    return folder
