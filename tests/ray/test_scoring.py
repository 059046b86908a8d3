"""Ray Data scoring on a real local cluster: same rows as in-process scoring, exactly once, resumable."""

import dataclasses
import json

import pytest

from meddiff.config import RayConfig, ScoreConfig, config_from_json
from meddiff.results import schema as S
from meddiff.scoring.local import score_checkpoint
from meddiff.results.store import read_meta, read_results
from meddiff.bundle import read_bundle
from tests.agreement import assert_same_scores

pytestmark = pytest.mark.ray

SCORE = ScoreConfig(n_draws=3, limit=48, shard_size=8, batch_size=8)
ACTORS = RayConfig(actors=2, cpus_per_actor=1.0, threads_per_actor=1)


def _data(checkpoint):
    return config_from_json(read_bundle(checkpoint).metadata["config"]).data


def test_ray_scoring_equals_in_process_and_is_exactly_once(ray_local, tiny_checkpoint, tmp_path):
    local = score_checkpoint(tiny_checkpoint, _data(tiny_checkpoint), SCORE, tmp_path / "local")
    on_ray = score_checkpoint(tiny_checkpoint, _data(tiny_checkpoint), SCORE, tmp_path / "ray", ray_cfg=ACTORS)
    assert on_ray["scored"] == local["scored"] == 48 and on_ray["shards"] == 6
    assert on_ray["actors_used"] == 2  # shards are handed out once both actors are up (see the next test)
    local_df, ray_df = read_results(tmp_path / "local"), read_results(tmp_path / "ray")
    assert ray_df[S.IMAGE_ID].is_unique and len(ray_df) == 48 and (ray_df[S.STATUS] == "ok").all()
    # the same draws, scored in other processes with other thread counts (tests/agreement.py)
    assert_same_scores(local_df, ray_df)
    assert read_meta(tmp_path / "ray")["model_id"] == read_bundle(tiny_checkpoint).model_id
    rec = read_meta(tmp_path / "ray")["throughput"]  # the job's own figure, for the report
    assert (rec["images"], rec["workers"], rec["device"]) == (48, 2, "cpu") and rec["threads"] >= 1
    assert rec["seconds"] == on_ray["seconds"] and rec["images_per_s"] == 48 / on_ray["seconds"]
    # one actor gives the same rows as two
    one = score_checkpoint(tiny_checkpoint, _data(tiny_checkpoint), SCORE, tmp_path / "one",
                           ray_cfg=RayConfig(actors=1, threads_per_actor=2))
    assert one["scored"] == 48 and one["actors_used"] == 1
    assert_same_scores(ray_df, read_results(tmp_path / "one"))
    # a shard size above the job's size is cut to two shards per actor, so no actor idles; a resume, here in
    # process, keeps the plan's shard size and finds every row done
    wide_cfg = dataclasses.replace(SCORE, shard_size=256)
    wide = score_checkpoint(tiny_checkpoint, _data(tiny_checkpoint), wide_cfg, tmp_path / "wide", ray_cfg=ACTORS)
    assert wide["shards"] == 4 and wide["scored"] == 48
    assert json.loads((tmp_path / "wide" / "_plan.json").read_text())["shard_size"] == 12
    again = score_checkpoint(tiny_checkpoint, _data(tiny_checkpoint), wide_cfg, tmp_path / "wide")
    assert again["scored"] == 0 and again["skipped"] == 48


def test_pool_hands_out_shards_only_once_every_actor_is_up(ray_local, tmp_path):
    """One actor is ready at once, the other takes seconds to load its model and every shard takes milliseconds: a
    pool that handed out shards to the first ready actor would score them all there (Ray Data's default)."""
    import os
    import time

    import numpy as np

    from meddiff.scoring.ray_pipeline import shard_pool_rows

    class SlowSecondActor:  # defined here so that Ray ships it by value
        def __init__(self, marker: str, num_threads: int) -> None:
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                time.sleep(4.0)  # the second actor "loads its model" slowly

        def __call__(self, batch):
            time.sleep(0.02)
            return {"shard": batch["shard"], "actor_pid": np.full(len(batch["shard"]), os.getpid())}

    rows = list(shard_pool_rows(SlowSecondActor, {"marker": str(tmp_path / "first")}, list(range(8)),
                                RayConfig(actors=2, cpus_per_actor=1.0, threads_per_actor=1)))
    assert sorted(int(r["shard"]) for r in rows) == list(range(8))
    assert len({int(r["actor_pid"]) for r in rows}) == 2


def test_a_pool_the_cluster_cannot_start_is_a_clear_error(ray_local):
    from meddiff.errors import MeddiffError
    from meddiff.scoring.ray_pipeline import shard_pool_rows

    class Never:
        def __init__(self, num_threads: int) -> None:
            pass

        def __call__(self, batch):
            return batch

    big = RayConfig(actors=2, cpus_per_actor=3.0, actor_start_timeout_s=3)  # the test cluster has 4 CPUs
    with pytest.raises(MeddiffError, match=r"pool of 2 actor\(s\) \(3.0 CPU, 0 GPU each\) did not start within "
                                           r"ray.actor_start_timeout_s = 3 s"):
        list(shard_pool_rows(Never, {}, [0, 1], big))


def test_pool_shortfall_names_what_the_cluster_lacks():
    from meddiff.scoring.ray_pipeline import pool_shortfall

    cfg = RayConfig(actors=4, cpus_per_actor=2.0, gpus_per_actor=1.0, actor_resources={"a100": 1})
    assert pool_shortfall(cfg, 1.0, {"CPU": 8.0, "GPU": 4.0, "a100": 4.0}) == ""
    assert pool_shortfall(cfg, 1.0, {"CPU": 6.0, "GPU": 4.0}) == ("4 x 2 CPU = 8 (the cluster has 6); "
                                                                   "4 x 1 a100 = 4 (the cluster has 0)")
    assert pool_shortfall(cfg, 0.0, {"CPU": 8.0, "a100": 4.0}) == ""  # GPUs not asked for


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
        time.sleep(0.05)
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
