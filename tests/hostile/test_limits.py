"""The endpoint's load limits, deadlines and bearer token without Ray: a full gate refuses at once with 429 and
Retry-After, a timed-out request keeps its slot until its thread ends, a slow body is 408, every bad token is 401."""

import asyncio
import json
import threading

import pytest

from meddiff.errors import ConfigError
from meddiff.serving.classifier import ServeSettings
from meddiff.serving.limits import Busy, Gate, MemoryBudget, authorize, check_token, read_within
from meddiff.serving.upload import UploadError

TOKEN = "s3cret-token-0123456789"


def run(coro):
    return asyncio.run(coro)


def test_a_full_gate_refuses_at_once_and_admits_again_after_release():
    async def main():
        gate = Gate("decode/predict", max_active=1, max_queued=1, retry_after_s=2.5)
        release = asyncio.Event()
        order = []

        async def hold(name):
            async with gate.admit():
                order.append(name)
                await release.wait()

        first = asyncio.create_task(hold("first"))
        second = asyncio.create_task(hold("second"))  # waits in the queue
        await asyncio.sleep(0)
        assert gate.admitted == 2 and order == ["first"]
        with pytest.raises(Busy) as info:  # the queue is full: refused, not blocked
            async with gate.admit():
                pass
        assert info.value.status == 429 and info.value.retry_after == 3 and info.value.limit == "decode/predict"
        assert "1 running and 1 waiting" in info.value.message
        release.set()
        await asyncio.gather(first, second)
        assert order == ["first", "second"] and gate.admitted == 0
        async with gate.admit():  # free again
            assert gate.admitted == 1

    run(main())


def test_a_timed_out_request_gets_504_and_its_thread_keeps_the_slot():
    async def main():
        gate = Gate("decode/predict", max_active=1, max_queued=0)
        done = threading.Event()

        def slow():
            done.wait(10)
            return "late"

        with pytest.raises(UploadError) as info:
            await gate.run(asyncio.to_thread(slow), 0.05, "decoding and scoring the image")
        assert info.value.status == 504 and "request timeout of 0.05 s" in info.value.message
        with pytest.raises(Busy):  # the thread still runs: no new work may take its place
            await gate.run(asyncio.sleep(0), 1, "x")
        done.set()
        for _ in range(200):
            if gate.admitted == 0:
                break
            await asyncio.sleep(0.01)
        assert gate.admitted == 0
        assert await gate.run(asyncio.to_thread(lambda: 7), 5, "x") == 7

    run(main())


def test_an_error_inside_the_work_frees_the_slot_and_propagates():
    async def main():
        gate = Gate("explain", 1, 0)

        async def bad():
            raise UploadError(422, "broken image")

        with pytest.raises(UploadError, match="broken image"):
            await gate.run(bad(), 5, "x")
        assert gate.admitted == 0

    run(main())


def test_a_slow_body_gets_408():
    async def trickle():
        await asyncio.sleep(5)

    with pytest.raises(UploadError) as info:
        run(read_within(trickle(), 0.05))
    assert info.value.status == 408 and "body_timeout_s" in info.value.message


@pytest.mark.parametrize("header, words", [
    (None, "needs a bearer token"),
    ("", "malformed Authorization"),
    ("Basic dXNlcjpwYXNz", "malformed Authorization"),
    ("Bearer", "malformed Authorization"),
    ("Bearer    ", "malformed Authorization"),
    ("Bearer wrong-token-0123456789", "invalid bearer token"),
    (f"Bearer {TOKEN}x", "invalid bearer token"),
    (f"Bearer {TOKEN[:-1]}", "invalid bearer token"),
    ("Bearer t\u00f6ken-with-non-ascii-0123", "invalid bearer token"),
    (TOKEN, "malformed Authorization"),
], ids=["missing", "empty", "basic scheme", "bearer without token", "bearer with blanks", "wrong token",
        "token with a suffix", "token prefix", "non-ascii token", "token without scheme"])
def test_every_bad_authorization_is_401_without_echoing_the_token(header, words):
    with pytest.raises(UploadError) as info:
        authorize(header, TOKEN)
    assert info.value.status == 401 and words in info.value.message
    assert TOKEN not in info.value.message


def test_the_right_token_passes_in_any_scheme_case():
    authorize(f"Bearer {TOKEN}", TOKEN)
    authorize(f"bearer {TOKEN}", TOKEN)


def test_a_missing_or_short_token_refuses_to_start():
    with pytest.raises(ConfigError, match="MEDDIFF_TOKEN is not set"):
        check_token(None, "MEDDIFF_TOKEN")
    with pytest.raises(ConfigError, match="has 5 characters; at least 16") as info:
        check_token("short", "MEDDIFF_TOKEN")
    assert "short" not in str(info.value)
    assert check_token(TOKEN, "X") == TOKEN


@pytest.mark.parametrize("args, words", [
    ({"max_concurrent": 0}, "max_concurrent >= 1"),
    ({"max_queued": -1}, "max_queued >= 0"),
    ({"max_explain": 0}, "max_explain >= 1"),
    ({"request_timeout_s": 0}, "request_timeout_s > 0"),
    ({"body_timeout_s": -1}, "body_timeout_s > 0"),
], ids=["no workers", "negative queue", "no explain worker", "zero timeout", "negative body timeout"])
def test_impossible_limits_are_config_errors(args, words):
    with pytest.raises(ConfigError, match=words):
        ServeSettings.from_mapping({"checkpoint": "x", **{k: str(v) for k, v in args.items()}})


def test_defaults_and_the_token_env_name_is_kept_as_text():
    s = ServeSettings.from_mapping({"checkpoint": "x", "token_env": "123"})
    assert (s.max_concurrent, s.max_queued, s.max_explain, s.explain_queue, s.request_timeout_s) == (2, 8, 1, 2, 60.0)
    assert s.token_env == "123"


def test_errors_become_429_with_retry_after_and_401_with_www_authenticate():
    from meddiff.serving.app import _error

    r = _error(Busy("explain", "the explain limit is reached", 10))
    assert r.status_code == 429 and r.headers["retry-after"] == "10"
    assert json.loads(r.body) == {"detail": "the explain limit is reached", "limit": "explain"}
    r = _error(UploadError(401, "invalid bearer token"))
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")


def test_memory_budget_is_max_pixels_times_bytes_times_workers():
    b = MemoryBudget(max_pixels=36_000_000, bytes_per_pixel=8, max_concurrent=2)
    assert b.total_bytes == 576_000_000 and b.record()["decode_pool_mib"] == round(576_000_000 / 2**20, 1)


def test_serve_and_loadtest_command_lines():
    from meddiff.cli import build_parser

    args = build_parser().parse_args(["serve", "--checkpoint", "x", "--max-concurrent", "3", "--max-queued", "0",
                                      "--max-explain", "2", "--request-timeout", "30", "--token-env", "TOK"])
    assert (args.max_concurrent, args.max_queued, args.max_explain, args.request_timeout, args.token_env) == (
        3, 0, 2, 30.0, "TOK")
    args = build_parser().parse_args(["loadtest", "http://h:8000", "--images", "imgs"])
    assert (args.url, args.clients, args.duration, args.bomb_side, args.bomb_every) == ("http://h:8000", 8, 60.0,
                                                                                         6000, 4)


def test_loadtest_images_and_bombs(tmp_path):
    from PIL import Image

    from meddiff.errors import DataError
    from meddiff.serving.loadtest import bomb_png, image_bodies

    bomb = bomb_png(6000)
    assert len(bomb) < 64 * 1024
    with Image.open(__import__("io").BytesIO(bomb)) as im:
        assert im.size == (6000, 6000)
    Image.new("L", (28, 28), 7).save(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("not an image")
    assert [n for n, _ in image_bodies(tmp_path)] == ["a.png"]
    (tmp_path / "m.csv").write_text("path\na.png\nmissing.png\n")
    with pytest.raises(DataError, match="1 image file\\(s\\) missing, e.g. .*missing.png"):
        image_bodies(tmp_path / "m.csv")
    (tmp_path / "n.csv").write_text("file\na.png\n")
    with pytest.raises(DataError, match="no 'path' column"):
        image_bodies(tmp_path / "n.csv")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no image files"):
        image_bodies(empty)
