"""Ray Data scoring on a real local cluster: same rows as in-process scoring, exactly once, resumable."""

import pandas as pd
import pytest

from meddiff.config import RayConfig, ScoreConfig, config_from_json
from meddiff.scoring import schema as S
from meddiff.scoring.local import score_checkpoint
from meddiff.scoring.results import read_meta, read_results
from meddiff.train.checkpoint import read_bundle

pytestmark = pytest.mark.ray

SCORE = ScoreConfig(n_draws=3, limit=48, shard_size=8, batch_size=8)
ACTORS = RayConfig(actors=2, cpus_per_actor=1.0, threads_per_actor=1)


def _data(checkpoint):
    return config_from_json(read_bundle(checkpoint).metadata["config"]).data


def _key(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(S.IMAGE_ID).reset_index(drop=True)


def test_ray_scoring_equals_in_process_and_is_exactly_once(ray_local, tiny_checkpoint, tmp_path):
    local = score_checkpoint(tiny_checkpoint, _data(tiny_checkpoint), SCORE, tmp_path / "local")
    on_ray = score_checkpoint(tiny_checkpoint, _data(tiny_checkpoint), SCORE, tmp_path / "ray", ray_cfg=ACTORS)
    assert on_ray["scored"] == local["scored"] == 48 and on_ray["shards"] == 6
    assert on_ray["actors_used"] == 2  # the pool really spreads the shards (one input block per shard)
    a, b = _key(read_results(tmp_path / "local")), _key(read_results(tmp_path / "ray"))
    assert b[S.IMAGE_ID].is_unique and len(b) == 48
    assert a[S.IMAGE_ID].tolist() == b[S.IMAGE_ID].tolist()
    assert a[S.PRED_VOTE].tolist() == b[S.PRED_VOTE].tolist()
    assert a[S.VOTES].map(list).tolist() == b[S.VOTES].map(list).tolist()
    for ea, eb in zip(a[S.MEAN_ERROR], b[S.MEAN_ERROR]):
        assert list(ea) == pytest.approx(list(eb), rel=1e-5)
    assert read_meta(tmp_path / "ray")["model_id"] == read_bundle(tiny_checkpoint).model_id
    # one actor gives the same rows as two
    one = score_checkpoint(tiny_checkpoint, _data(tiny_checkpoint), SCORE, tmp_path / "one",
                           ray_cfg=RayConfig(actors=1, threads_per_actor=2))
    assert one["scored"] == 48
    c = _key(read_results(tmp_path / "one"))
    assert c[S.PRED_VOTE].tolist() == b[S.PRED_VOTE].tolist() and c[S.UNCERTAINTY].tolist() == b[S.UNCERTAINTY].tolist()


def test_interrupted_ray_job_finishes_the_rest(ray_local, tiny_checkpoint, tmp_path):
    out = tmp_path / "res"
    score_checkpoint(tiny_checkpoint, _data(tiny_checkpoint), SCORE, out, ray_cfg=ACTORS)
    shards = sorted(out.glob("shard-*.parquet"))
    kept = {p: p.stat().st_mtime_ns for p in shards[:3]}
    for p in shards[3:]:
        p.unlink()  # as if the driver had been killed after three shards
    again = score_checkpoint(tiny_checkpoint, _data(tiny_checkpoint), SCORE, out, ray_cfg=ACTORS)
    assert again["skipped"] == 24 and again["scored"] == 24 and again["shards"] == 3
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    df = read_results(out)
    assert len(df) == 48 and df[S.IMAGE_ID].is_unique


def test_killed_scoring_job_rerun_completes_without_rescoring(ray_local, tiny_checkpoint, tmp_path):
    """A real `meddiff score` driver on the shared cluster, SIGKILLed after its first shards, then run again."""
    import os
    import signal
    import subprocess
    import sys
    import time

    address = ray_local.get_runtime_context().gcs_address
    out = tmp_path / "res"
    cmd = [sys.executable, "-m", "meddiff.cli", "score", "--checkpoint", str(tiny_checkpoint), "--out", str(out),
           "--address", address, "--actors", "1", "--n-draws", "12", "--limit", "64",
           "--set", "score.shard_size=8", "--set", "score.batch_size=8", "--set", "ray.threads_per_actor=2"]
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(out.glob("shard-*.parquet"))) < 2 and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {p: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet")}
    assert 2 <= len(done_before) < 8, f"expected an interrupted job, found {len(done_before)} of 8 shards"
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    after = {p: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet")}
    assert len(after) == 8
    assert all(after[p] == t for p, t in done_before.items()), "finished shards were scored again"
    df = read_results(out)
    assert len(df) == 64 and df[S.IMAGE_ID].is_unique and (df[S.STATUS] == "ok").all()


def test_scale_run_reports_start_up_and_steady_throughput(ray_local, tmp_path):
    from meddiff.bench.run import run_scale

    out = run_scale(tmp_path, sizes=(500, 1000), actors=2, log=lambda _line: None)
    rows = out["scale"]
    assert [r["images"] for r in rows] == [500, 1000]
    for r in rows:  # the first shard marks the end of start-up; the rest of the job is the steady rate
        assert 0 < r["start_up_s"] < r["seconds"] and r["steady_images_per_s"] > 0 and r["driver_peak_rss_mb"] > 0
    md = (tmp_path / "bench.md").read_text()
    assert "images/s after start-up" in md and "MFLOP" not in md  # no model line for the scale run
