"""The dashboard served for real (``meddiff dashboard``) and every page photographed by headless Chromium.

The PNGs go to $MEDDIFF_SCREENSHOTS (else a pytest temp folder) for a human to look at; the test checks that each page
rendered what a user should see, with no traceback and no "Page not found".
"""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

PAGES = {
    # name: (path and query, words the page must show)
    # (tables are drawn on a canvas, so their cells are not page text; AppTest checks their numbers)
    "overview": ("/", ["Runs overview", "Table 1", "Runs (3)"]),
    "curves": ("/curves", ["Accuracy vs uncertainty threshold", "images kept", "Curve data"]),
    "gallery": ("/gallery", ["Counterfactual gallery", "(true class)", "votes: normal", "difference: pneumonia"]),
    "explorer": ("/explorer?" + urllib.parse.urlencode({"run": "runs/unet/results/test",
                                                        "image": "pneumoniamnist_balanced/test/00007"}),
                 ["Image explorer", "Votes per class", "Vote share after the first k draws", "Error of every draw"]),
    "refused": ("/?folder=../", ["is outside the results root", "Refused"]),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dashboard_url(results_root, tmp_path_factory):
    """``meddiff dashboard --results ROOT`` in a subprocess; stopped with SIGTERM (it stops Streamlit with it)."""
    port = _free_port()
    log = tmp_path_factory.mktemp("dashboard") / "dashboard.log"
    cmd = [sys.executable, "-m", "meddiff.cli", "dashboard", "--results", str(results_root["root"]), "--port", str(port)]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"meddiff dashboard exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/_stcore/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the dashboard did not come up within 120 s:\n{log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def shots_dir(tmp_path_factory) -> Path:
    out = Path(os.environ.get("MEDDIFF_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.mark.parametrize("name", list(PAGES))
def test_page_screenshot(name, dashboard_url, chromium, shots_dir):
    path, words = PAGES[name]
    out = shots_dir / f"{name}.png"
    text = chromium.screenshot(dashboard_url + path, out)
    print(f"\n[screenshot] {out}")
    for bad in ("Traceback", "Page not found", "Error:"):
        assert bad not in text, f"{name}: the page shows {bad!r}:\n{text[:2000]}"
    for word in words:
        assert word in text, f"{name}: {word!r} is not on the page:\n{text[:2000]}"
    image = np.asarray(Image.open(out).convert("L"), dtype=np.float32)
    assert image.shape[1] == 1400 and image.shape[0] >= 1000
    assert image.std() > 10, f"{name}: the screenshot is nearly blank"
