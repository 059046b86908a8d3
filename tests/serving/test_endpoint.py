"""The Serve endpoint over real HTTP on 127.0.0.1, started the way users start it (``meddiff serve``, one Ray cluster
for the module): batch scoring's answer for real images, a 4xx for every bad body, /healthz, /model, explain, load."""

import base64
import dataclasses
import io
import os
import signal
import statistics
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.agreement import assert_same_image
from tests.servers import free_port, running_server

from meddiff.config import config_from_json
from meddiff.results import schema as S
from meddiff.scoring.local import score_checkpoint
from meddiff.results.store import read_results
from meddiff.bundle import read_bundle

pytestmark = pytest.mark.ray

N_DRAWS, SEED, MAX_BYTES = 5, 3, 300_000


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    """``meddiff serve`` in a subprocess (its own local Ray cluster); yields its base URL, stops it with SIGINT."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    cmd = [sys.executable, "-m", "meddiff.cli", "serve", "--checkpoint", str(tiny_checkpoint), "--port", str(port),
           "--n-draws", str(N_DRAWS), "--seed", str(SEED), "--set", f"max_upload_bytes={MAX_BYTES}",
           "--set", "explain_steps=4", "--set", "num_threads=1", "--set", "batch_wait_timeout_s=0.01"]
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    url = f"http://127.0.0.1:{port}"
    with running_server(cmd, f"{url}/healthz", log, "meddiff serve", 240, signal.SIGINT, env):
        yield url


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def real_images(tiny_checkpoint):
    """The checkpoint's first 8 test-split images as (manifest id, PNG bytes), exactly the pixels batch scoring reads."""
    data = config_from_json(read_bundle(tiny_checkpoint).metadata["config"]).data
    with np.load(data.params["path"]) as f:
        arrays = f["test_images"][:8]
    out = []
    for i, a in enumerate(arrays):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        out.append((f"pneumoniamnist_balanced/test/{i:05d}", buf.getvalue()))
    return out


def test_healthz_and_model(client, tiny_checkpoint):
    bundle = read_bundle(tiny_checkpoint)
    health = client.get("/healthz").json()
    assert health == {"status": "ok", "model_id": bundle.model_id, "method": "diffusion",
                      "classes": ["normal", "pneumonia"]}
    card = client.get("/model").json()
    assert card["metadata"]["model_id"] == bundle.model_id
    assert card["metadata"]["weights_sha256"] == bundle.metadata["weights_sha256"]
    assert card["serving"]["score_config"]["n_draws"] == N_DRAWS and card["serving"]["score_config"]["seed"] == SEED
    assert card["serving"]["limits"]["max_bytes"] == MAX_BYTES


def test_prediction_equals_batch_scoring_for_the_same_id_and_seed(client, tiny_checkpoint, real_images, tmp_path):
    meta = read_bundle(tiny_checkpoint).metadata
    run_cfg = config_from_json(meta["config"])
    cfg = dataclasses.replace(run_cfg.score, n_draws=N_DRAWS, seed=SEED, limit=8, shard_size=8, batch_size=8,
                              num_threads=2)
    score_checkpoint(tiny_checkpoint, run_cfg.data, cfg, tmp_path / "batch")
    batch = read_results(tmp_path / "batch").set_index(S.IMAGE_ID)
    assert list(batch.index) == [i for i, _ in real_images]

    # concurrent requests, so @serve.batch groups them; the answer must not depend on the grouping
    answers: dict[str, dict] = {}

    def ask(image_id, data, multipart):
        if multipart:
            r = client.post("/predict", files={"file": ("x.png", data, "image/png")}, data={"id": image_id})
        else:
            r = client.post("/predict", params={"id": image_id}, content=data, headers={"Content-Type": "image/png"})
        assert r.status_code == 200, r.text
        answers[image_id] = r.json()

    threads = [threading.Thread(target=ask, args=(i, d, k % 2 == 0)) for k, (i, d) in enumerate(real_images)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for image_id, _ in real_images:
        got, want = answers[image_id], batch.loc[image_id]
        assert got["image_id"] == image_id
        assert got["class_name"] == ("normal", "pneumonia")[got["class"]]
        # the same draws as batch scoring, in other batch shapes: equal up to near-tied draws (tests/agreement.py)
        assert_same_image(want.to_dict() | {S.IMAGE_ID: image_id}, {
            S.IMAGE_ID: image_id, S.VOTES: list(got["votes"].values()), S.PRED_VOTE: got["pred_vote"],
            S.PRED_AVERAGE: got["pred_average"], S.MEAN_ERROR: list(got["mean_error"].values()),
            S.UNCERTAINTY: got["uncertainty"]})
        assert got["class"] == {"vote": got["pred_vote"], "average": got["pred_average"]}[want[S.RULE]]
        assert got["n_draws"] == N_DRAWS and got["nfe"] == 2 * N_DRAWS and got["seed"] == SEED
        assert got["model_id"] == want[S.MODEL_ID]


def test_without_id_the_file_hash_seeds_the_noise(client, real_images):
    import hashlib

    _, data = real_images[0]
    first = client.post("/predict", files={"file": ("a.png", data)}).json()
    again = client.post("/predict", content=data, headers={"Content-Type": "application/octet-stream"}).json()
    assert first["image_id"] == "sha256:" + hashlib.sha256(data).hexdigest()
    assert again == first


def test_jpeg_and_grey_rgb_files_are_accepted(client, image_files):
    for name in ("good_jpeg", "grey_as_rgb_png", "opaque_rgba_png"):
        r = client.post("/predict", files={"file": (name, image_files[name])})
        assert r.status_code == 200, (name, r.text)
        assert sum(r.json()["votes"].values()) == N_DRAWS


def _chunked(data: bytes):
    for i in range(0, len(data), 65536):
        yield data[i : i + 65536]


def bad_requests(files):
    """(kind, httpx request kwargs, expected status, words in the message): 20 kinds of bad body."""
    raw = lambda name, ct="image/png": {"content": files[name], "headers": {"Content-Type": ct}}
    part = lambda name: {"files": {"file": (f"{name}.bin", files[name], "application/octet-stream")}}
    big = b"\x89PNG\r\n\x1a\n" + os.urandom(MAX_BYTES + 10)
    boundary = "----meddiff"
    return [
        ("empty body", raw("empty"), 400, "empty"),
        ("empty file field", part("empty"), 400, "empty"),
        ("wrong content type json", {"content": files["json"], "headers": {"Content-Type": "application/json"}},
         415, "multipart/form-data"),
        ("wrong content type text", raw("text", "text/plain"), 415, "text/plain"),
        ("non-image bytes", raw("text"), 415, "not an image"),
        ("pdf", part("pdf"), 415, "PDF"),
        ("unsupported format gif", part("gif"), 415, "GIF"),
        ("truncated png", part("truncated_png"), 422, "truncated"),
        ("truncated jpeg", raw("truncated_jpeg", "image/jpeg"), 422, "truncated"),
        ("oversized with content-length", {"content": big, "headers": {"Content-Type": "image/png"}}, 413, "limit"),
        ("oversized chunked", {"content": _chunked(big), "headers": {"Content-Type": "image/png"}}, 413, "limit"),
        ("oversized multipart", {"files": {"file": ("big.png", big)}}, 413, "limit"),
        ("colour image to a grayscale model", part("colour_png"), 422, "grayscale"),
        ("transparent rgba", part("transparent_rgba_png"), 422, "alpha"),
        ("cmyk: four channels", part("cmyk_jpeg"), 422, "CMYK"),
        ("image too small", part("tiny_png"), 422, "smallest accepted side"),
        ("huge dimensions", part("huge_header_png"), 422, "data.max_pixels"),
        ("missing file field", {"files": {"image": ("x.png", files["good_png"])}}, 422, "no 'file' field"),
        ("file field is text", {"data": {"file": "xray.png"}, "files": {"other": ("x", b"x")}}, 422, "text, not a file"),
        ("malformed multipart", {"content": b"--nope\r\n\r\ngarbage",
                                 "headers": {"Content-Type": f"multipart/form-data; boundary={boundary}"}},
         400, "multipart"),
        ("invalid id", {**raw("good_png"), "params": {"id": "x" * 300}}, 422, "not a valid image id"),
        ("conflicting ids", {"files": {"file": ("x.png", files["good_png"])}, "data": {"id": "a"}, "params": {"id": "b"}},
         422, "two different ids"),
        ("explain not a boolean", {**raw("good_png"), "params": {"explain": "maybe"}}, 422, "explain"),
    ]


def test_every_bad_body_gets_its_4xx_with_a_clear_message(client, image_files):
    cases = bad_requests(image_files)
    assert len(cases) >= 8
    for kind, kwargs, status, words in cases:
        r = client.post("/predict", **kwargs)
        assert r.status_code == status, f"{kind}: {r.status_code} {r.text[:300]}"
        assert words in r.text, f"{kind}: {r.text[:300]}"
    assert client.get("/predict").status_code == 405
    assert client.get("/healthz").status_code == 200  # still serving after all that


def test_explain_returns_a_counterfactual_png(client, real_images):
    image_id, data = real_images[1]
    r = client.post("/predict", params={"explain": "true", "id": image_id}, files={"file": ("x.png", data)})
    assert r.status_code == 200, r.text
    body = r.json()
    ex = body["explanation"]
    assert ex["layout"] == ["input", "reconstruction:normal", "reconstruction:pneumonia", "difference:normal",
                            "difference:pneumonia"]
    assert ex["steps"] == 4 and ex["difference_mode"] == "signed" and set(ex["reconstruction_error"]) == {"normal",
                                                                                                            "pneumonia"}
    strip = Image.open(io.BytesIO(base64.b64decode(ex["png_base64"])))
    assert strip.format == "PNG" and strip.height >= 128 and strip.width > 5 * strip.height
    assert body["votes"] is not None and body["image_id"] == image_id


def test_bounded_load_200_requests_from_8_clients_without_errors(server, real_images):
    n_requests, n_clients = 200, 8
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    counter = iter(range(n_requests))

    def worker():
        with httpx.Client(base_url=server, timeout=120) as c:
            while True:
                with lock:
                    k = next(counter, None)
                if k is None:
                    return
                image_id, data = real_images[k % len(real_images)]
                t0 = time.perf_counter()
                try:
                    r = c.post("/predict", files={"file": ("x.png", data)}, data={"id": f"{image_id}#{k}"})
                    ok = r.status_code == 200 and r.json()["class_name"] in ("normal", "pneumonia")
                    error = None if ok else f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as exc:
                    error = repr(exc)
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    if error:
                        failures.append(error)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(latencies)
    p50, p99 = statistics.median(lat), lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))]
    print(f"\n[load] {n_requests} requests from {n_clients} clients (N = {N_DRAWS} draws): {n_requests / wall:.1f} req/s, "
          f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, errors {len(failures)}")
    assert len(lat) == n_requests
    assert failures == []
