"""The subgroup section and the model card on results sets this test writes: a baseline run whose metadata carries a
planted site shortcut, with an explanation folder of its most confident errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from PIL import Image

from meddiff.report.build import build_report
from meddiff.results import explain_schema as X
from meddiff.results import schema as S

CLASSES = ["normal", "pneumonia"]


def write_run(folder: Path, n_patients: int = 60, data_extra: dict | None = None) -> list[dict]:
    """Two images per patient; site A holds the positives 90 % of the time and the model predicts from the site."""
    rng = np.random.default_rng(0)
    rows = []
    for g in range(n_patients):
        site = "A" if g % 2 == 0 else "B"
        label = (1 if site == "A" else 0) if rng.random() < 0.9 else int(rng.integers(0, 2))
        for k in range(2):
            p1 = float(np.clip((0.8 if site == "A" else 0.2) + rng.normal(0, 0.1), 0.01, 0.99))
            pred = int(p1 > 0.5)
            rows.append({S.IMAGE_ID: f"img{g:03d}_{k}", S.LABEL: label, S.LABEL_NAME: CLASSES[label], S.SPLIT: "test",
                         S.PRED: pred, S.PRED_NAME: CLASSES[pred], S.PROB: [1 - p1, p1],
                         S.UNCERTAINTY: float(-(p1 * np.log2(p1) + (1 - p1) * np.log2(1 - p1))), S.NFE: 1,
                         S.GROUP: f"patient{g:03d}", S.METADATA: json.dumps({"site": site, "sex": "FM"[k]}),
                         S.DECISION: "accept" if abs(p1 - 0.5) > 0.2 else "refer", S.METHOD: "baseline",
                         S.MODEL_ID: "rn-1234", S.STATUS: S.STATUS_OK})
    folder.mkdir(parents=True)
    pq.write_table(S.to_table(rows), folder / "shard-000000.parquet")
    ck = {"kind": "baseline", "model": {"name": "resnet18", "params": {}}, "class_names": CLASSES, "step": 500,
          "image_size": 28, "channels": 1, "train_images": 480, "val_images": 60, "model_id": "rn-1234",
          "config": {"data": {"source": "medmnist", "params": {"path": "/data/x.npz"}, "split_seed": 0,
                              "split_fractions": [0.8, 0.1, 0.1], "balance": False, "cv_folds": 0},
                     "train": {"seed": 3, "batch_size": 64, "lr": 0.001, "augment": True}}}
    (folder / "meta.json").write_text(json.dumps({
        "method": "baseline", "class_names": CLASSES, "model_id": "rn-1234", "checkpoint_metadata": ck,
        "score_config": {"split": "test", "seed": 0}, "code_version": "meddiff test",
        "data": {"name": "synthetic", "fingerprint": "ab" * 32, **(data_extra or {})}}))
    return rows


def write_explanation(folder: Path, results: Path, image_ids: list[str]) -> None:
    rng = np.random.default_rng(1)
    (folder / "png").mkdir(parents=True)
    index = []
    for n, image_id in enumerate(image_ids):
        names = {"in": f"png/{n}_in.png", 0: f"png/{n}_r0.png", 1: f"png/{n}_r1.png", "d0": f"png/{n}_d0.png",
                 "d1": f"png/{n}_d1.png"}
        for rel in names.values():
            Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(folder / rel)
        for c in (0, 1):
            index.append({X.IMAGE_ID: image_id, X.LABEL: 0, X.REASON: "certain", X.CLASS: c, X.CLASS_NAME: CLASSES[c],
                          X.FACTUAL: c == 0, X.INPUT_PNG: names["in"], X.RECON_PNG: names[c],
                          X.DIFF_PNG: names[f"d{c}"], X.STATUS: X.STATUS_OK, X.MODEL_ID: "rn-1234"})
    (folder / "index").mkdir()
    pq.write_table(X.to_table(index), folder / "index" / "shard-000000.parquet")
    (folder / "explain.json").write_text(json.dumps({"model_id": "rn-1234", "results": str(results.resolve())}))


SELECTIVE = {"title": "Selective prediction", "markdown": "Referral at alpha = 0.05: **coverage 71 %**.\n",
             "figures": {}, "tables": {}}


def make_card(tmp_path: Path, data_extra: dict | None = None) -> tuple[dict, list[dict]]:
    rows = write_run(tmp_path / "runs" / "rn" / "results" / "test", data_extra=data_extra)
    wrong = [r for r in rows if r[S.PRED] != r[S.LABEL]]
    confident = sorted(wrong, key=lambda r: (r[S.UNCERTAINTY], r[S.IMAGE_ID]))[:2]
    write_explanation(tmp_path / "runs" / "rn" / "explanations", tmp_path / "runs" / "rn" / "results" / "test",
                      [r[S.IMAGE_ID] for r in confident])
    out = build_report([f"rn={tmp_path / 'runs' / 'rn' / 'results' / 'test'}"], tmp_path / "report", n_boot=100,
                       log=None, card=True, extra_sections=[SELECTIVE])
    return out, confident


def test_report_has_subgroups_and_the_shortcut(tmp_path):
    out, _ = make_card(tmp_path)
    strata = pd.read_parquet(out["tables"]["subgroups"])
    assert set(strata["column"]) == {"site", "sex"} and set(strata["stratum"]) == {"(all)", "A", "B", "F", "M"}
    pooled = strata[(strata["column"] == "site") & (strata["stratum"] == "(all)")].iloc[0]
    assert pooled["images"] == 120 and pooled["groups"] == 60 and "coverage" in strata.columns
    probe = pd.read_parquet(out["tables"]["shortcut_probe"]).set_index("features")
    assert probe.loc["site", "verdict"] == "shortcut suspected" and probe.loc["sex", "verdict"] != "shortcut suspected"
    text = Path(out["report"]).read_text()
    assert "## Subgroups and shortcuts" in text and "Shortcut probe: shortcut suspected" in text
    assert "![site](subgroups_rn_site.png)" in text
    assert Path(out["figures"]["subgroups_rn_site"]).stat().st_size > 5000


def test_model_card_sections_provenance_and_todo(tmp_path):
    out, confident = make_card(tmp_path)
    md = Path(out["card"]["md"]).read_text()
    titles = re.findall(r"^## \d+\. (.+)$", md, flags=re.M)
    assert titles == ["Data sources and counts", "How the splits were made", "Leakage checks", "Model and training",
                      "Performance with confidence intervals", "Calibration", "Subgroups and shortcut probe: rn",
                      "Referral with a guarantee (selective prediction)", "Selective prediction", "Failure cases", "To be filled in by the user"]
    rows = write_run(tmp_path / "again")
    n = [sum(r[S.LABEL] == c for r in rows) for c in (0, 1)]
    assert f"normal {n[0]} ({n[0] // 2}), pneumonia {n[1]} ({n[1] // 2})" in md  # images (patients) per class
    assert "480 / 60" in md and "rn-1234" in md and "resnet18" in md and "| 500 | 3 |" in md
    assert "leakage checks not recorded" in md and md.count("not recorded") >= 3  # grouping, metadata columns
    assert "coverage 71 %" in md and "CLAIM 2024: failure analysis" in md and "TRIPOD+AI: fairness" in md
    for r in confident:
        assert f"`{r[S.IMAGE_ID]}`" in md
    assert "Counterfactuals from" in md
    assert "not available: image id 'img024_1' is not <file>/<split>/<index>" in md  # says why there are no pixels
    assert "Intended use" in md and "TRIPOD+AI: ethical approval" in md


def test_model_card_renders_recorded_grouping_and_leakage(tmp_path):
    out, _ = make_card(tmp_path, {"grouping": "patient (from patient_id)", "metadata_columns": ["site", "sex"],
                                  "leakage": {"groups shared between splits": 0, "duplicate images across splits": 0}})
    md = Path(out["card"]["md"]).read_text()
    assert "patient (from patient_id)" in md and "groups shared between splits | 0" in md
    assert "leakage checks not recorded" not in md


def test_model_card_html_is_self_contained(tmp_path):
    out, _ = make_card(tmp_path)
    page = Path(out["card"]["html"]).read_text()
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) == 2 + 2 + 1 + 2 * 5  # reliability, coverage, two strata figures, risk-coverage, 2 failures x 5 PNGs
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http://" not in page and "https://" not in page and "<link" not in page and "<script" not in page
    assert "<table>" in page and "<style>" in page
