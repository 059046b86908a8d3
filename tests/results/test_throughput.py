"""The throughput a real scoring job records in meta.json is what the report shows; a resumed job records its own
images and seconds, and a job with nothing left to score keeps the last record."""

import pandas as pd
import pytest

from meddiff.bundle import read_bundle
from meddiff.config import ScoreConfig, config_from_json
from meddiff.report.build import build_report
from meddiff.results.runs import RECORDED, load
from meddiff.results.store import read_meta
from meddiff.scoring.local import score_checkpoint

SCORE = ScoreConfig(n_draws=3, limit=16, shard_size=8, batch_size=8)


def test_recorded_throughput_is_what_the_report_shows(tiny_checkpoint, tmp_path):
    data = config_from_json(read_bundle(tiny_checkpoint).metadata["config"]).data
    out = tmp_path / "res"
    summary = score_checkpoint(tiny_checkpoint, data, SCORE, out)
    rec = read_meta(out)["throughput"]
    assert rec["images"] == 16 and rec["seconds"] == pytest.approx(summary["seconds"])
    assert rec["images_per_s"] == pytest.approx(16 / summary["seconds"])
    assert rec["device"] == "cpu" and rec["threads"] >= 1 and rec["workers"] == 1
    assert read_meta(out)["method_capabilities"] == {"votes": True, "counterfactuals": True}

    speed = load(out).throughput()
    assert (speed.source, speed.images_per_s, speed.device) == (RECORDED, rec["images_per_s"], "cpu")
    report = build_report([f"tiny={out}"], tmp_path / "report", n_boot=20, repeats=2, log=None)
    t1 = pd.read_parquet(report["tables"]["table1"])
    assert (t1["images_per_s"] == rec["images_per_s"]).all() and (t1["images_per_s_source"] == RECORDED).all()
    assert f"| {rec['images_per_s']:.1f} |" in (tmp_path / "report" / "report.md").read_text()

    # a resumed job: only the missing shard is scored, and the record is that job's
    sorted(out.glob("shard-*.parquet"))[1].unlink()
    again = score_checkpoint(tiny_checkpoint, data, SCORE, out)
    resumed = read_meta(out)["throughput"]
    assert again["scored"] == 8 and resumed["images"] == 8
    assert resumed["seconds"] == pytest.approx(again["seconds"])
    # nothing left to score: the last record stays
    assert score_checkpoint(tiny_checkpoint, data, SCORE, out)["scored"] == 0
    assert read_meta(out)["throughput"] == resumed
