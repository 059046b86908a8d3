"""A results root written by the tests through meddiff's schema modules: two diffusion runs, a baseline run and an
explanation folder with PNGs, so the dashboard tests depend on no other job's output."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from meddiff.explain import render
from meddiff.results import explain_schema as X
from meddiff.results import schema as S
from meddiff.results.store import write_meta

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "dashboard" / "app.py"
CLASSES = ["normal", "pneumonia"]


def diffusion_rows(n: int, n_draws: int, seed: int, model_id: str, skill: float, fail: int = 0) -> list[dict]:
    """Rows like DiffusionPredictor's: per-draw errors [C][N], votes = argmin counts, vote-share entropy."""
    from meddiff.diffusion.uncertainty import vote_entropy

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = i % 2
        errors = rng.gamma(2.0, 0.1, size=(2, n_draws))
        errors[label] *= rng.uniform(skill, 1.2, size=n_draws)  # the true class usually reconstructs better
        t = rng.uniform(0, 1, size=n_draws)
        winner = errors.argmin(axis=0)
        votes = np.bincount(winner, minlength=2)
        mean = errors.mean(axis=1)
        pred_vote, pred_avg = int(votes.argmax()), int(mean.argmin())
        rows.append({
            S.IMAGE_ID: f"pneumoniamnist_balanced/test/{i:05d}", S.LABEL: label, S.LABEL_NAME: CLASSES[label],
            S.SPLIT: "test", S.SOURCE: "medmnist", S.PRED: pred_vote, S.PRED_NAME: CLASSES[pred_vote],
            S.PRED_VOTE: pred_vote, S.PRED_AVERAGE: pred_avg, S.VOTES: votes.tolist(),
            S.PROB: (votes / n_draws).tolist(), S.MEAN_ERROR: mean.tolist(),
            S.UNCERTAINTY: float(vote_entropy(torch.tensor(votes[None]))[0]), S.N_DRAWS: n_draws, S.NFE: 2 * n_draws,
            S.DRAW_ERRORS: errors.tolist(), S.DRAW_T: t.tolist(), S.METHOD: "diffusion", S.RULE: "vote",
            S.MODEL_ID: model_id, S.SEED: 0, S.STATUS: S.STATUS_OK, S.CODE_VERSION: "test",
        })
    for j in range(fail):
        rows.append({S.IMAGE_ID: f"pneumoniamnist_balanced/test/broken{j}", S.LABEL: 0, S.STATUS: S.STATUS_ERROR,
                     S.ERROR: "cannot decode image (OSError: image file is truncated)", S.METHOD: "diffusion",
                     S.MODEL_ID: model_id, S.SEED: 0})
    return rows


def baseline_rows(n: int, seed: int, model_id: str) -> list[dict]:
    from meddiff.diffusion.uncertainty import softmax_entropy

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = i % 2
        logits = rng.normal(0, 1, size=2)
        logits[label] += 1.0
        prob = np.exp(logits) / np.exp(logits).sum()
        pred = int(prob.argmax())
        rows.append({
            S.IMAGE_ID: f"pneumoniamnist_balanced/test/{i:05d}", S.LABEL: label, S.LABEL_NAME: CLASSES[label],
            S.SPLIT: "test", S.SOURCE: "medmnist", S.PRED: pred, S.PRED_NAME: CLASSES[pred], S.PROB: prob.tolist(),
            S.UNCERTAINTY: float(softmax_entropy(torch.tensor(logits[None]))[0]), S.NFE: 1, S.METHOD: "baseline",
            S.MODEL_ID: model_id, S.SEED: 0, S.STATUS: S.STATUS_OK, S.CODE_VERSION: "test",
        })
    return rows


def write_run(folder: Path, rows: list[dict], method: str, backbone: str, model_id: str, dataset: str,
              n_draws: int | None, data_config: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    half = len(rows) // 2  # two shards, as scoring writes them
    pq.write_table(S.to_table(rows[:half]), folder / "shard-000000.parquet")
    pq.write_table(S.to_table(rows[half:]), folder / "shard-000001.parquet")
    write_meta(folder, {
        "method": method, "model_id": model_id, "class_names": CLASSES,
        "score_config": {"n_draws": n_draws or 51, "seed": 0, "rule": "vote", "split": "test"},
        "data": {"name": dataset, "rows": len(rows)},
        "checkpoint_metadata": {"kind": method, "model": {"name": backbone, "params": {}}, "class_names": CLASSES,
                                **({"config": {"data": data_config}} if data_config else {})},
        "created": "2026-01-01T00:00:00+0000",
    })
    return folder


def write_explanations(folder: Path, results: Path, rows: list[dict], model_id: str) -> Path:
    """An explanation folder as meddiff explain writes it: explain.json, index/shard-*.parquet, png/."""
    rng = np.random.default_rng(7)
    index = []
    for row in rows:
        image = torch.tensor(rng.uniform(-1, 1, size=(1, 28, 28)), dtype=torch.float32)
        recons = (image[None] + torch.tensor(rng.normal(0, 0.2, size=(2, 1, 28, 28)), dtype=torch.float32)).clamp(-1, 1)
        inp, rec, dif, vmax = render.write_image_pngs(folder, row[S.IMAGE_ID], image, recons, CLASSES, (0, 1))
        for c in (0, 1):
            index.append({
                X.IMAGE_ID: row[S.IMAGE_ID], X.LABEL: row[S.LABEL], X.LABEL_NAME: row[S.LABEL_NAME],
                X.PRED: row[S.PRED], X.UNCERTAINTY: row[S.UNCERTAINTY], X.REASON: "uncertain", X.CLASS: c,
                X.CLASS_NAME: CLASSES[c], X.FACTUAL: c == row[S.LABEL], X.T_START: 0.5, X.STEPS: 8, X.GUIDANCE: 7.5,
                X.SEED: 0, X.INPUT_PNG: inp, X.RECON_PNG: rec[c], X.DIFF_PNG: dif[c],
                X.RECON_ERROR: float(((recons[c] - image) ** 2).mean()), X.DIFF_MODE: "signed", X.DIFF_SCALE: vmax,
                X.MODEL_ID: model_id, X.STATUS: X.STATUS_OK, X.CODE_VERSION: "test",
            })
    index.append({X.IMAGE_ID: "pneumoniamnist_balanced/test/broken0", X.LABEL: 0, X.REASON: "uncertain",
                  X.MODEL_ID: model_id, X.STATUS: X.STATUS_ERROR, X.ERROR: "cannot decode image"})
    (folder / "index").mkdir(parents=True)
    pq.write_table(X.to_table(index), folder / "index" / "shard-000000.parquet")
    (folder / "explain.json").write_text(json.dumps({
        "model_id": model_id, "results": str(results), "class_names": CLASSES, "images": len(rows) + 1,
        "explain_config": {"t_start": 0.5, "steps": 8, "guidance": 7.5, "seed": 0, "select": "uncertain:3"},
    }))
    return folder


@pytest.fixture(scope="session")
def results_root(tmp_path_factory) -> dict:
    """root/ with runs/unet (diffusion, N = 9, 1 failed row; its data config points at a small .npz of its images),
    runs/dit (diffusion, N = 7, another dataset), runs/resnet18 (baseline; two images per patient and a planted
    site shortcut in its metadata) and explanations/unet (3 explained images + 1 failed)."""
    root = tmp_path_factory.mktemp("results-root")
    unet = diffusion_rows(40, 9, seed=1, model_id="unet-aaaa", skill=0.5, fail=1)
    dit = diffusion_rows(30, 7, seed=2, model_id="dit-bbbb", skill=0.7)
    res = baseline_rows(40, seed=3, model_id="resnet18-cccc")
    for i, row in enumerate(res):  # 20 patients of two images; site A holds the positive patients but one
        patient = (i % 2, i // 4)
        site = "A" if row[S.LABEL] == 1 or patient == (0, 0) else "B"
        row.update({S.GROUP: f"patient{patient[0]}-{patient[1]}",
                    S.METADATA: json.dumps({"site": site, "view": "AP" if i % 3 else "PA"})})
    npz = tmp_path_factory.mktemp("data") / "pneumoniamnist_balanced.npz"
    pixels = np.random.default_rng(11).integers(0, 256, size=(40, 28, 28), dtype=np.uint8)
    pixels[:, 8:20, 8:20] = 255  # a bright square: the explorer must show these pixels
    np.savez(npz, test_images=pixels, test_labels=np.arange(40) % 2)
    paths = {
        "unet": write_run(root / "runs" / "unet" / "results" / "test", unet, "diffusion", "unet", "unet-aaaa",
                          "pneumoniamnist_balanced", 9, {"source": "medmnist", "params": {"path": str(npz)}}),
        "dit": write_run(root / "runs" / "dit" / "results" / "test", dit, "diffusion", "dit", "dit-bbbb",
                         "breastmnist", 7),
        "resnet18": write_run(root / "runs" / "resnet18" / "results" / "test", res, "baseline", "resnet18",
                              "resnet18-cccc", "pneumoniamnist_balanced", None),
    }
    picked = sorted(unet[:40], key=lambda r: -r[S.UNCERTAINTY])[:3]
    paths["explanations"] = write_explanations(root / "explanations" / "unet", paths["unet"], picked, "unet-aaaa")
    return {"root": root, "paths": paths, "rows": {"unet": unet, "dit": dit, "resnet18": res}, "explained": picked,
            "pixels": pixels}


# --- headless Chromium over the DevTools protocol -----------------------------------------------------------------

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]
# Streamlit is done when its script has run, no skeleton placeholder is left and every <img> has loaded.
_READY_JS = """(() => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  if (document.querySelector('[data-testid="stSkeleton"]')) return false;
  return [...document.images].every(i => i.complete);
})()"""
_HEIGHT_JS = """(() => {
  const main = document.querySelector('[data-testid="stMain"]') || document.querySelector('section.main');
  return Math.max(document.body.scrollHeight, main ? main.scrollHeight : 0);
})()"""


class Chromium:
    """One headless Chromium (fresh profile) driven through CDP with the `websockets` client Streamlit depends on."""

    def __init__(self, profile: Path, width: int = 1400) -> None:
        import re
        import shutil
        import subprocess

        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        if exe is None:
            message = "chromium is not installed (apt-get install -y chromium; .ci/run installs it)"
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(message)
            pytest.skip(message)
        self.width = width
        self.proc = subprocess.Popen([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                                      f"--window-size={width},1000", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        self.port = None
        while self.port is None and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line or "")
            if found:
                self.port = int(found.group(1))
            elif not line and self.proc.poll() is not None:
                break
        if self.port is None:
            self.close()
            pytest.fail("chromium did not start its DevTools endpoint")
        self._id = 0

    def _page_ws(self) -> str:
        import httpx

        targets = httpx.get(f"http://127.0.0.1:{self.port}/json/list", timeout=10).json()
        return next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")

    def _call(self, ws, method: str, **params):
        self._id += 1
        ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(ws.recv(timeout=60))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def _eval(self, ws, expression: str):
        return self._call(ws, "Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def screenshot(self, url: str, out: Path, timeout: float = 90.0, settle: float = 1.0, ready: str = "") -> str:
        """Load ``url``, wait until Streamlit has rendered (or the JS expression ``ready`` is true, for a page that
        is not Streamlit's), grow the viewport to the page and save a PNG.

        Returns the page's visible text (to check what the user sees: no traceback, no "Page not found")."""
        import base64

        from websockets.sync.client import connect

        with connect(self._page_ws(), max_size=64 * 2**20, open_timeout=30) as ws:
            self._call(ws, "Emulation.setDeviceMetricsOverride", width=self.width, height=1000, deviceScaleFactor=1,
                       mobile=False)
            self._call(ws, "Page.navigate", url=url)
            deadline = time.monotonic() + timeout
            time.sleep(1.0)
            while not self._eval(ws, ready or _READY_JS):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{url} did not finish rendering within {timeout} s")
                time.sleep(0.3)
            time.sleep(settle)  # charts (Vega) draw asynchronously after the script run
            height = int(min(6000, max(1000, self._eval(ws, _HEIGHT_JS) or 1000)))
            self._call(ws, "Emulation.setDeviceMetricsOverride", width=self.width, height=height, deviceScaleFactor=1,
                       mobile=False)
            time.sleep(settle)
            data = self._call(ws, "Page.captureScreenshot", format="png")["data"]
            text = self._eval(ws, "document.body.innerText") or ""
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(data))
        return text

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except Exception:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    """A headless Chromium with a fresh profile (skipped where Chromium is not installed, a failure in CI)."""
    browser = Chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield browser
    browser.close()
