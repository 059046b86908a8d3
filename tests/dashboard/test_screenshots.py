"""The dashboard served for real (``meddiff dashboard``) and every page photographed by headless Chromium.

The PNGs go to $MEDDIFF_SCREENSHOTS (else a pytest temp folder) for a human to look at; the test checks that each page
rendered what a user should see, with no traceback and no "Page not found".
"""

import os
import signal
import sys
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.servers import free_port, running_server

PAGES = {
    # name: (path and query, words the page must show)
    # (tables are drawn on a canvas, so their cells are not page text; AppTest checks their numbers)
    "overview": ("/", ["Runs overview", "Table 1", "Runs (3)"]),
    "curves": ("/curves", ["Accuracy vs uncertainty threshold", "images kept", "Curve data"]),
    "gallery": ("/gallery", ["Counterfactual gallery", "(true class)", "votes: normal", "difference: pneumonia"]),
    "explorer": ("/explorer?" + urllib.parse.urlencode({"run": "runs/unet/results/test",
                                                        "image": "pneumoniamnist_balanced/test/00007"}),
                 ["Image explorer", "The image", "stored pixels", "Votes per class", "Vote share after the first k draws",
                  "Error of every draw", "No counterfactuals of this image"]),
    # an image of the explanation folder (the fixture explains the 3 most uncertain: 00002, 00003, 00004)
    "explorer_cf": ("/explorer?" + urllib.parse.urlencode({"run": "runs/unet/results/test",
                                                           "image": "pneumoniamnist_balanced/test/00002"}),
                    ["The image", "stored pixels", "Counterfactuals", "as normal", "difference: pneumonia"]),
    "strata": ("/strata?" + urllib.parse.urlencode({"run": "runs/resnet18/results/test", "column": "site"}),
               ["Subgroups and shortcuts", "Per stratum of", "Shortcut probe", "shortcut suspected",
                "Does the model beat the metadata?", "Within-stratum vs pooled"]),
    "refused": ("/?folder=../", ["is outside the results root", "Refused"]),
}


@pytest.fixture(scope="module")
def dashboard_url(results_root, tmp_path_factory):
    """``meddiff dashboard --results ROOT`` in a subprocess; stopped with SIGTERM (it stops Streamlit with it)."""
    port = free_port()
    log = tmp_path_factory.mktemp("dashboard") / "dashboard.log"
    cmd = [sys.executable, "-m", "meddiff.cli", "dashboard", "--results", str(results_root["root"]), "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with running_server(cmd, f"{url}/_stcore/health", log, "meddiff dashboard", 120, signal.SIGTERM):
        yield url


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
