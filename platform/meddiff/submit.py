"""``meddiff submit``: run a job entrypoint on a Ray cluster through the Ray Jobs API, with this checkout as its code.

The working directory (minus virtualenvs, runs, results and git data) is uploaded; ``platform/`` goes first on the
job's PYTHONPATH so the cluster runs exactly the submitted code (its image must provide the dependencies, see
infra/Dockerfile). With ``wait`` the call follows the job to a terminal state and prints its logs.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Callable, Sequence

from meddiff.errors import MeddiffError

# gitignore-style, anchored at the working dir: a top-level runs/ or results/ folder holds artefacts, while
# platform/meddiff/results/ is the package that reads them
EXCLUDES = [".venv", ".git", "/runs", "/results", "/outputs", "**/__pycache__", "*.egg-info", ".pytest_cache"]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
AGENT_PATIENCE_S = 120.0


class JobFailed(MeddiffError):
    """A submitted job ended in FAILED or STOPPED."""


def _submit_when_agent_ready(client, entrypoint: str, runtime_env: dict, log: Callable[[str], None],
                             patience_s: float = AGENT_PATIENCE_S) -> str:
    """``client.submit_job``, retried while the head's job agent is still starting: right after ``ray start`` the
    dashboard answers before its agent does, and Ray refuses the job with "No available agent"."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            log("[submit] the cluster's job agent is not ready yet; retrying")
            time.sleep(2.0)


def submit(
    address: str,
    entrypoint: Sequence[str],
    working_dir: str | Path = ".",
    wait: bool = True,
    timeout_s: float = 24 * 3600,
    log: Callable[[str], None] = print,
) -> tuple[str, str]:
    """Submit ``entrypoint`` (e.g. ["python", "jobs/score.py", "--config", ...]); returns (job id, status)."""
    from ray.job_submission import JobSubmissionClient

    if not entrypoint:
        raise MeddiffError("submit: nothing to run; give the entrypoint after --, e.g. -- python jobs/score.py ...")
    client = JobSubmissionClient(address)
    runtime_env = {
        "working_dir": str(Path(working_dir).resolve()),
        "excludes": EXCLUDES,
        "env_vars": {"PYTHONPATH": "platform", "RAY_AUTH_MODE": "disabled"},
    }
    job_id = _submit_when_agent_ready(client, shlex.join(entrypoint), runtime_env, log)
    log(f"[submit] job {job_id} submitted to {address}: {shlex.join(entrypoint)}")
    if not wait:
        return job_id, str(client.get_job_status(job_id))
    deadline = time.monotonic() + timeout_s
    status = str(client.get_job_status(job_id))
    while status not in TERMINAL and time.monotonic() < deadline:
        time.sleep(2.0)
        new = str(client.get_job_status(job_id))
        if new != status:
            log(f"[submit] job {job_id}: {new}")
        status = new
    log(client.get_job_logs(job_id))
    log(f"[submit] job {job_id} ended {status}")
    if status != "SUCCEEDED":
        raise JobFailed(f"job {job_id} ended {status}; see the logs above (ray job logs {job_id} --address {address})")
    return job_id, status
