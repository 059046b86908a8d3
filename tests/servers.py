"""Test helpers for the tests that run a real server process (the Serve endpoint, the Streamlit dashboard)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(cmd: list[str], health_url: str, log: Path, what: str, start_timeout: float,
                   stop_signal: int, env: dict | None = None):
    """Run ``cmd`` (a server) in its own session until ``health_url`` answers 200; stop it with ``stop_signal`` at the
    end (SIGKILL to its process group if it does not exit). Fails the test with the log's tail when it dies or does
    not come up in time."""
    import os
    import signal
    import subprocess
    import time

    import httpx

    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(health_url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{what} did not answer {health_url} within {start_timeout:.0f} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield proc
    finally:
        proc.send_signal(stop_signal)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
