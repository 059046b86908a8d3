"""The model card's HTML (``meddiff report --card``) photographed by headless Chromium as a file:// page: it renders
its sections, tables and embedded figures with nothing fetched. The PNG goes to $MEDDIFF_SCREENSHOTS (else a pytest
temp folder) for a human to look at."""

import os
from pathlib import Path

import numpy as np
from PIL import Image

from tests.report.test_card import make_card

STATIC_READY = "document.readyState === 'complete' && [...document.images].every(i => i.complete && i.naturalWidth > 0)"


def test_model_card_screenshot(chromium, tmp_path):
    out, _ = make_card(tmp_path)
    shots = Path(os.environ.get("MEDDIFF_SCREENSHOTS") or tmp_path / "shots")
    png = shots / "model_card.png"
    text = chromium.screenshot(Path(out["card"]["html"]).resolve().as_uri(), png, ready=STATIC_READY)
    print(f"\n[screenshot] {png}")
    for words in ("Model card: rn", "1. Data sources and counts", "Leakage checks", "Shortcut probe: shortcut suspected",
                  "Selective prediction", "Failure cases", "To be filled in by the user", "CLAIM 2024", "TRIPOD+AI"):
        assert words in text, f"{words!r} is not on the card:\n{text[:2000]}"
    image = np.asarray(Image.open(png).convert("L"), dtype=np.float32)
    assert image.shape[1] == 1400 and image.shape[0] >= 3000  # the whole card, not the first screen
    assert image.std() > 10
