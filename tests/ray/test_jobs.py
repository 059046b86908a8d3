"""The Ray Jobs API against a real job server on localhost: `meddiff submit` runs jobs/score.py to SUCCEEDED and the
parquet it wrote reads back with pandas."""

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from meddiff.results import schema as S

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")
DASHBOARD = 8275


@pytest.fixture(scope="module")
def job_server():
    import ray

    if ray.is_initialized():
        ray.shutdown()
    # the job server runs entrypoints with this environment: put the virtualenv's python first
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    subprocess.run([RAY, "start", "--head", "--num-cpus", "2", "--port", "6391", "--dashboard-host", "127.0.0.1",
                    "--dashboard-port", str(DASHBOARD), "--include-dashboard=true", "--disable-usage-stats"],
                   check=True, env=env, capture_output=True, timeout=180)
    url = f"http://127.0.0.1:{DASHBOARD}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/api/version", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    yield url
    subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_submitted_score_job_succeeds_and_its_parquet_reads_back(job_server, tiny_checkpoint, tmp_path):
    from meddiff.submit import submit

    out = tmp_path / "job-results"
    lines: list[str] = []
    job_id, status = submit(
        job_server,
        ["python", "jobs/score.py", "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--n-draws", "3",
         "--limit", "24", "--actors", "1", "--set", "score.shard_size=8", "--set", "ray.cpus_per_actor=0.5",
         "--set", "ray.threads_per_actor=1"],
        working_dir=REPO, wait=True, timeout_s=600, log=lines.append,
    )
    assert status == "SUCCEEDED", "\n".join(lines)
    df = pd.concat(pd.read_parquet(p) for p in sorted(out.glob("shard-*.parquet")))
    assert len(df) == 24 and df[S.IMAGE_ID].is_unique and (df[S.STATUS] == "ok").all()
    assert any("vote: accuracy" in line for line in lines)  # the job's own summary, from its logs


def test_submitted_gpu_check_runs_its_cpu_mode_in_a_ray_task(job_server, tmp_path):
    """jobs/gpu_check.py --ray as a Ray job: the check runs in a task (one GPU when the cluster has one; none here, so
    one CPU and the CPU mode) and the driver writes its JSON (tests/bench/test_gpu_check.py checks its contents)."""
    import json

    from meddiff.submit import submit

    out = tmp_path / "gpu_check.json"
    lines: list[str] = []
    _, status = submit(job_server, ["python", "jobs/gpu_check.py", "--ray", "--rules", "futility",
                                   "--min-agreement", "0", "--out", str(out)],
                       working_dir=REPO, wait=True, timeout_s=600, log=lines.append)
    assert status == "SUCCEEDED", "\n".join(lines)  # --min-agreement 0: the exit code says the run went through
    result = json.loads(out.read_text())
    assert result["mode"] == "cpu" and [v["name"] for v in result["variants"]][-2:] == ["futility@0.01, fp32",
                                                                                         "futility@0.01, bf16"]
    assert any("Ray task with {'num_cpus': 1} (cluster GPUs: 0)" in line for line in lines)
