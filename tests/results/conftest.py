"""A small results folder writer for the read-model tests: rows of a classifier that voted over draws, with whatever
meta.json the test asks for."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from meddiff.results import schema as S

CLASSES = ["normal", "pneumonia"]


def voting_rows(m: int = 12) -> list[dict[str, Any]]:
    """``m`` labelled rows with every vote column filled (3 draws), and one failed row."""
    rows = []
    for i in range(m):
        y, vote, avg = i % 2, (i % 2 if i % 3 else 1 - i % 2), i % 2 if i % 4 else 1 - i % 2
        votes = [3, 0] if vote == 0 else [1, 2]
        rows.append({S.IMAGE_ID: f"img{i:03d}", S.LABEL: y, S.LABEL_NAME: CLASSES[y], S.SPLIT: "test", S.PRED: vote,
                     S.PRED_NAME: CLASSES[vote], S.PRED_VOTE: vote, S.PRED_AVERAGE: avg, S.VOTES: votes,
                     S.PROB: [v / 3 for v in votes], S.MEAN_ERROR: [0.2, 0.3] if avg == 0 else [0.3, 0.2],
                     S.UNCERTAINTY: 0.0 if 0 in votes else 0.92, S.N_DRAWS: 3, S.NFE: 6, S.METHOD: "diffusion",
                     S.RULE: "vote", S.MODEL_ID: "m", S.SEED: 0, S.STATUS: S.STATUS_OK})
    rows.append({S.IMAGE_ID: "broken", S.LABEL: 0, S.STATUS: S.STATUS_ERROR, S.ERROR: "cannot decode"})
    return rows


@pytest.fixture
def write_results():
    """write_results(folder, meta) -> folder: two part files of ``voting_rows`` and meta.json = ``meta``."""

    def write(folder: Path, meta: dict[str, Any]) -> Path:
        rows = voting_rows()
        folder.mkdir(parents=True)
        pq.write_table(S.to_table(rows[:6]), folder / "shard-000000.parquet")
        pq.write_table(S.to_table(rows[6:]), folder / "shard-000001.parquet")
        (folder / "meta.json").write_text(json.dumps({
            "model_id": "m", "class_names": CLASSES, "data": {"name": "synthetic"},
            "score_config": {"n_draws": 3, "rule": "vote", "seed": 0, "split": "test"}, **meta}))
        return folder

    return write
