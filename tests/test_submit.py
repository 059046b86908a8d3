"""meddiff submit waits for a head whose job agent is still starting, and passes every other refusal on."""

import pytest

from meddiff import submit as sub


class FakeClient:
    def __init__(self, errors):
        self.errors, self.calls = list(errors), 0

    def submit_job(self, entrypoint, runtime_env):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "raysubmit_1"


def test_retries_while_the_job_agent_is_not_ready(monkeypatch):
    monkeypatch.setattr(sub.time, "sleep", lambda s: None)
    agent = RuntimeError("Request failed with status code 500: No available agent to submit job, please try again later..")
    client, lines = FakeClient([agent, agent]), []
    assert sub._submit_when_agent_ready(client, "python jobs/score.py", {}, lines.append) == "raysubmit_1"
    assert client.calls == 3 and lines == ["[submit] the cluster's job agent is not ready yet; retrying"] * 2


def test_other_refusals_and_a_lasting_agent_outage_are_raised(monkeypatch):
    monkeypatch.setattr(sub.time, "sleep", lambda s: None)
    with pytest.raises(RuntimeError, match="status code 400"):
        sub._submit_when_agent_ready(FakeClient([RuntimeError("status code 400: bad runtime_env")]), "x", {}, print)
    agent = RuntimeError("No available agent to submit job")
    with pytest.raises(RuntimeError, match="No available agent"):
        sub._submit_when_agent_ready(FakeClient([agent] * 5), "x", {}, lambda _l: None, patience_s=-1.0)


def test_the_upload_keeps_the_package_and_drops_top_level_artefacts():
    """The working dir a job uploads: the package's own results/ (the read model) and every module stay; top-level
    runs/ and results/ folders (artefacts) and the virtualenv go (Ray's gitignore-style matcher)."""
    from pathlib import Path

    from ray._private.runtime_env.packaging import _get_excludes

    from meddiff.submit import EXCLUDES

    repo = Path(__file__).resolve().parents[1]
    excluded = _get_excludes(repo, EXCLUDES)
    for kept in ("platform/meddiff/results/runs.py", "platform/meddiff/results/schema.py", "tests/results/conftest.py",
                 "jobs/score.py", "platform/meddiff/methods/diffusion/train.py"):
        assert not excluded(repo / kept), kept
    for dropped in ("results/my-run/part-000.parquet", "runs/demo/metrics.jsonl", ".venv/bin/python",
                    "platform/meddiff/__pycache__/cli.cpython-311.pyc"):
        assert excluded(repo / dropped), dropped
