"""The Serve endpoint under hostile load, over real HTTP: one ``meddiff serve`` with a bearer token and tight limits
(one decode/predict worker, one waiting; one explanation, none waiting; a 2 s body timeout). Every kind of abuse gets
its own 4xx with a clear message (never a 5xx), the server goes on, and SIGTERM leaves no process of its session.
The SIGTERM test stops the module's server, so it is the last test of this file."""

import io
import os
import signal
import socket
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.servers import free_port, running_server

from meddiff.bundle import read_bundle
from meddiff.config import config_from_json
from meddiff.serving.loadtest import LoadTest, bomb_png, image_bodies, run_loadtest

pytestmark = pytest.mark.ray

TOKEN_ENV, TOKEN = "MEDDIFF_HOSTILE_TOKEN", "hostile-test-token-5f1c0e9a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_BYTES, BODY_TIMEOUT = 300_000, 2


@pytest.fixture(scope="module")
def hostile(tiny_checkpoint, tmp_path_factory):
    """(base URL, the server process) of ``meddiff serve --token-env`` with tight limits, in its own session."""
    port = free_port()
    log = tmp_path_factory.mktemp("hostile-serve") / "serve.log"
    cmd = [sys.executable, "-m", "meddiff.cli", "serve", "--checkpoint", str(tiny_checkpoint), "--port", str(port),
           "--n-draws", "5", "--seed", "3", "--token-env", TOKEN_ENV, "--max-concurrent", "1", "--max-queued", "1",
           "--max-explain", "1", "--set", "explain_queue=0", "--set", f"body_timeout_s={BODY_TIMEOUT}",
           "--set", f"max_upload_bytes={MAX_BYTES}", "--set", "explain_steps=200", "--set", "num_threads=1"]
    env = dict(os.environ, RAY_AUTH_MODE="disabled", **{TOKEN_ENV: TOKEN})
    url = f"http://127.0.0.1:{port}"
    with running_server(cmd, f"{url}/healthz", log, "meddiff serve", 240, signal.SIGTERM, env) as proc:
        yield url, proc, log


@pytest.fixture(scope="module")
def client(hostile):
    with httpx.Client(base_url=hostile[0], timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def images(tiny_checkpoint, tmp_path_factory):
    """The checkpoint's first 6 test images as PNG files in a folder (what `meddiff loadtest --images` reads)."""
    data = config_from_json(read_bundle(tiny_checkpoint).metadata["config"]).data
    with np.load(data.params["path"]) as f:
        arrays = f["test_images"][:6]
    folder = tmp_path_factory.mktemp("loadtest-images")
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(folder / f"{i:02d}.png")
    return folder


def _png(images) -> bytes:
    return sorted(images.glob("*.png"))[0].read_bytes()


@pytest.mark.parametrize("headers, words", [
    ({}, "needs a bearer token"),
    ({"Authorization": "Bearer wrong-token-but-long-enough"}, "invalid bearer token"),
    ({"Authorization": f"Basic {TOKEN}"}, "malformed Authorization"),
    ({"Authorization": "Bearer"}, "malformed Authorization"),
], ids=["missing token", "wrong token", "wrong scheme", "empty bearer"])
def test_without_the_right_bearer_token_predict_and_model_are_401(client, images, headers, words):
    for r in (client.post("/predict", content=_png(images), headers={"Content-Type": "image/png", **headers}),
              client.get("/model", headers=headers)):
        assert r.status_code == 401 and words in r.json()["detail"], r.text
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert TOKEN not in r.text
    assert client.get("/healthz").status_code == 200  # open: orchestrators probe it


def test_the_openapi_schema_needs_the_token_and_there_is_no_open_docs_page(client):
    r = client.get("/openapi.json")
    assert r.status_code == 401 and "needs a bearer token" in r.json()["detail"]
    schema = client.get("/openapi.json", headers=AUTH)
    assert schema.status_code == 200 and "/predict" in schema.json()["paths"]
    assert client.get("/docs").status_code == 404 and client.get("/docs", headers=AUTH).status_code == 404


def test_with_the_token_the_model_card_states_limits_and_memory_but_not_the_token(client, images, hostile):
    card = client.get("/model", headers=AUTH)
    assert card.status_code == 200
    limits = card.json()["serving"]["load_limits"]
    assert (limits["max_concurrent"], limits["max_queued"], limits["max_explain"], limits["explain_queue"]) == (1, 1,
                                                                                                              1, 0)
    assert limits["bearer_token"] is True
    budget = card.json()["serving"]["memory_budget"]
    assert budget["max_pixels"] == 36_000_000 and budget["max_concurrent"] == 1
    assert budget["decode_pool_mib"] == round(36_000_000 * budget["bytes_per_pixel"] / 2**20, 1)
    assert TOKEN not in card.text and TOKEN not in hostile[2].read_text()  # neither in /model nor in the log
    r = client.post("/predict", content=_png(images), headers={"Content-Type": "image/png", **AUTH})
    assert r.status_code == 200 and r.json()["class_name"] in ("normal", "pneumonia")


def _raw(url: str, head: str, body: bytes) -> str:
    """Send a hand-made request on a socket (then nothing more) and read the whole answer (status, headers, body)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall(head.encode() + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(4096) or b"\r\n\r\n"
        headers, _, rest = data.partition(b"\r\n\r\n")
        length = int(next((line.split(b":")[1] for line in headers.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), b"0"))
        while len(rest) < length:
            chunk = s.recv(4096)
            if not chunk:
                break
            rest += chunk
    return (headers + b"\r\n\r\n" + rest).decode(errors="replace")


def test_a_slow_body_gets_408_and_the_server_goes_on(hostile, client, images):
    answer = _raw(hostile[0], f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 5000\r\n"
                              f"Authorization: Bearer {TOKEN}\r\n", b"\x89PNG\r\n\x1a\n")  # then nothing
    assert answer.startswith("HTTP/1.1 408"), answer[:300]
    assert "body_timeout_s" in answer
    r = client.post("/predict", content=_png(images), headers={"Content-Type": "image/png", **AUTH})
    assert r.status_code == 200


def test_an_oversized_content_length_is_413_before_the_body_is_read(hostile, client):
    answer = _raw(hostile[0], f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: "
                              f"{50 * 2**30}\r\nAuthorization: Bearer {TOKEN}\r\n", b"\x89PNG\r\n\x1a\n")
    assert answer.startswith("HTTP/1.1 413"), answer[:300]
    assert f"the limit is {MAX_BYTES} bytes" in answer
    assert client.get("/healthz").status_code == 200


def _flood(url: str, n: int, lead_s: float = 0.0, **request) -> list[httpx.Response]:
    """n requests at once (with lead_s > 0: the first alone, the others lead_s later, all at once)."""
    out: list = [None] * n
    barrier = threading.Barrier(n - 1 if lead_s else n)

    def send(k):
        with httpx.Client(base_url=url, timeout=300) as c:
            if not (lead_s and k == 0):
                barrier.wait()
            out[k] = c.post("/predict", headers={"Content-Type": "image/png", **AUTH}, **request)

    threads = [threading.Thread(target=send, args=(k,)) for k in range(n)]
    for k, t in enumerate(threads):
        t.start()
        if lead_s and k == 0:
            time.sleep(lead_s)
    for t in threads:
        t.join()
    return out


def _check_flood(answers, limit: str) -> None:
    codes = sorted(r.status_code for r in answers)
    assert set(codes) <= {200, 429}, codes  # no 5xx, nothing else
    assert 200 in codes and 429 in codes, codes
    refused = [r for r in answers if r.status_code == 429]
    for r in refused:
        assert r.json()["limit"] in ("decode/predict", "explain") and "limit is reached" in r.json()["detail"]
        assert int(r.headers["retry-after"]) >= 1
    assert limit in {r.json()["limit"] for r in refused}, [r.json() for r in refused]


def test_a_flood_of_in_limit_decompression_bombs_gets_429_with_retry_after(hostile, client):
    bomb = bomb_png(6000)  # 36 MP of one colour: a few KiB on the wire
    assert len(bomb) < MAX_BYTES
    _check_flood(_flood(hostile[0], 6, content=bomb), "decode/predict")
    assert client.get("/healthz").status_code == 200


def test_an_explain_flood_gets_429_with_retry_after(hostile, client, images):
    # the first one is explaining (200 sampler steps) when the others arrive: the explain gate (1 at once, no queue)
    # refuses them before they take a decode slot
    answers = _flood(hostile[0], 4, lead_s=1.0, content=_png(images), params={"explain": "true"})
    _check_flood(answers, "explain")
    assert answers[0].status_code == 200 and answers[0].json()["explanation"]["steps"] == 200
    assert client.get("/healthz").status_code == 200


def test_loadtest_under_hostile_mix_has_no_5xx_and_the_unloaded_answers(hostile, images, capsys):
    report = run_loadtest(LoadTest(url=hostile[0], clients=4, duration_s=10, bomb_every=3), image_bodies(images),
                          token=TOKEN)
    print(report.text())
    assert report.server_errors == 0 and not report.transport_errors
    assert report.valid_checked > 0 and report.wrong_answers == 0, report.wrong_examples
    assert report.missing_retry_after == 0
    assert report.bombs > 0 and set(report.statuses) <= {200, 429}
    assert report.peak_rss and max(report.peak_rss.values()) >= max(report.idle_rss.values(), default=0)


def test_loadtest_command_line_refuses_a_missing_token(images, capsys):
    from meddiff.cli import main

    assert main(["loadtest", "http://127.0.0.1:9", "--images", str(images), "--token-env", "MEDDIFF_NO_SUCH_VAR"]) == 2
    assert "MEDDIFF_NO_SUCH_VAR is not set" in capsys.readouterr().err


def test_serve_refuses_to_start_without_its_token(tiny_checkpoint, monkeypatch, capsys):
    from meddiff.cli import main

    monkeypatch.setenv("MEDDIFF_SHORT_TOKEN", "short")
    assert main(["serve", "--checkpoint", str(tiny_checkpoint), "--token-env", "MEDDIFF_SHORT_TOKEN"]) == 2
    err = capsys.readouterr().err
    assert "has 5 characters; at least 16" in err and "short" not in err.replace("MEDDIFF_SHORT_TOKEN", "")


def test_zz_sigterm_stops_serve_and_leaves_no_process_of_its_session(hostile):
    """Last test of the module: it stops the module's server."""
    import ray  # noqa: F401  Ray vendors psutil
    import psutil

    url, proc, log = hostile
    children = psutil.Process(proc.pid).children(recursive=True)
    names = " ".join(" ".join(c.cmdline()) for c in children)
    assert "raylet" in names and "gcs_server" in names, names[:500]  # this server started the cluster
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
    deadline = time.monotonic() + 30
    while True:
        left = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        session = [p for p in psutil.process_iter(["pid"]) if _sid(p.info["pid"]) == proc.pid]
        if (not left and not session) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not left, [" ".join(c.cmdline())[:200] for c in left]
    assert not session, [p.info["pid"] for p in session]
    assert "[serve] stopping" in log.read_text()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{url}/healthz", timeout=2)


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None
