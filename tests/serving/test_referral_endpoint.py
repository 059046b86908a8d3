"""``meddiff serve --referral``: the endpoint's JSON answer carries the referral decision (accept when the image's
uncertainty is at or below the threshold, else refer), alpha, delta and the threshold; /model records the referral."""

import json
import os
import signal
import sys

import httpx
import numpy as np
import pytest

from tests.serving.conftest import png
from tests.servers import free_port, running_server

from meddiff.bundle import read_bundle

pytestmark = pytest.mark.ray


def test_answer_carries_the_referral_decision(tiny_checkpoint, tmp_path):
    referral = tmp_path / "referral.json"
    referral.write_text(json.dumps({"rule": "ltt", "alpha": 0.1, "delta": 0.1, "threshold": 0.3,
                                    "model_id": read_bundle(tiny_checkpoint).metadata["model_id"]}))
    port = free_port()
    cmd = [sys.executable, "-m", "meddiff.cli", "serve", "--checkpoint", str(tiny_checkpoint), "--port", str(port),
           "--n-draws", "5", "--referral", str(referral), "--set", "num_threads=1"]
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    rng = np.random.default_rng(0)
    with running_server(cmd, f"{url}/healthz", tmp_path / "serve.log", "meddiff serve", 240, signal.SIGINT, env):
        with httpx.Client(base_url=url, timeout=120) as client:
            for i in range(3):
                image = png((rng.random((28, 28)) * 255).astype(np.uint8))
                body = client.post("/predict", files={"file": ("x.png", image, "image/png")}).json()
                expect = "accept" if body["uncertainty"] <= 0.3 else "refer"
                assert body["decision"] == expect, body
                assert (body["risk_alpha"], body["risk_delta"], body["refer_threshold"]) == (0.1, 0.1, 0.3)
            assert client.get("/model").json()["serving"]["referral"]["threshold"] == 0.3
