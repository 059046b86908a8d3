"""``meddiff loadtest``: hostile load against a running endpoint, and what it did to the replica.

N clients post for D seconds a mix of valid images (a folder or a manifest CSV) and in-limit decompression bombs
(a single-colour PNG of ``bomb_side`` x ``bomb_side`` pixels: a few KiB on the wire, tens of MB decoded) built here.
Before the load every valid image is sent once, unloaded; under load each valid answer must equal that one (same
class and votes: the image id seeds the noise, see ``serving.classifier``). Reported: requests/s, status counts,
5xx, p50/p95 latency, wrong answers, 429s without Retry-After, and the peak RSS of the Serve replica processes (found
by "ServeReplica" in their command line, sampled every ``sample_s``) next to the memory budget /model states.
"""

from __future__ import annotations

import csv
import io
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meddiff.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
REPLICA_MARK = "ServeReplica"


@dataclass(frozen=True)
class LoadTest:
    url: str
    clients: int = 8
    duration_s: float = 60.0
    bomb_side: int = 6000
    bomb_every: int = 4  # every k-th request is a bomb; 0: none
    timeout_s: float = 180.0
    sample_s: float = 0.2

    def __post_init__(self) -> None:
        if self.clients < 1 or self.duration_s <= 0 or self.bomb_every < 0 or self.bomb_side < 1:
            raise ConfigError(f"loadtest: expected clients >= 1, duration > 0, bomb_every >= 0 and bomb_side >= 1, "
                              f"got {self.clients}, {self.duration_s}, {self.bomb_every}, {self.bomb_side}")


def image_bodies(source: str | Path) -> list[tuple[str, bytes]]:
    """(name, file bytes) of the valid images: the image files of a folder (sorted) or the ``path`` column of a
    manifest CSV (relative to the CSV's folder)."""
    source = Path(source).expanduser()
    if source.is_dir():
        paths = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    elif source.is_file() and source.suffix.lower() == ".csv":
        with open(source, newline="") as f:
            reader = csv.DictReader(f)
            if "path" not in (reader.fieldnames or []):
                raise DataError(f"{source}: no 'path' column (columns: {reader.fieldnames}); a manifest with image "
                                f"paths relative to the CSV's folder expected")
            paths = [source.parent / row["path"] for row in reader]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise DataError(f"{source}: {len(missing)} image file(s) missing, e.g. {missing[0]}")
    else:
        raise DataError(f"{source}: neither a folder of images nor a manifest .csv")
    if not paths:
        raise DataError(f"{source}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return [(p.name, p.read_bytes()) for p in paths]


def bomb_png(side: int, value: int = 128) -> bytes:
    """A side x side single-colour grayscale PNG: a few KiB that decode to side^2 bytes (a decompression bomb)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (side, side), value).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


class RssSampler(threading.Thread):
    """Peak RSS (bytes) of every process whose command line holds ``mark``, sampled every ``period_s``."""

    def __init__(self, period_s: float = 0.2, mark: str = REPLICA_MARK) -> None:
        super().__init__(daemon=True)
        self.period_s, self.mark = period_s, mark
        self.peak: dict[int, int] = {}
        self.samples = 0
        self._stop_event = threading.Event()

    def sample(self) -> dict[int, int]:
        psutil = _psutil()
        now = {}
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if any(self.mark in part for part in (proc.info["cmdline"] or [])):
                    now[proc.info["pid"]] = proc.memory_info().rss
            except psutil.Error:
                continue
        for pid, rss in now.items():
            self.peak[pid] = max(rss, self.peak.get(pid, 0))
        self.samples += 1
        return now

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.period_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def _psutil():
    import psutil  # a dependency (pyproject.toml); imported here so the module loads without it for --help

    return psutil


@dataclass
class LoadReport:
    clients: int
    duration_s: float
    statuses: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    valid_checked: int = 0
    wrong_answers: int = 0
    wrong_examples: list[str] = field(default_factory=list)
    missing_retry_after: int = 0
    transport_errors: Counter = field(default_factory=Counter)
    bombs: int = 0
    bomb_bytes: int = 0
    idle_rss: dict[int, int] = field(default_factory=dict)
    peak_rss: dict[int, int] = field(default_factory=dict)
    memory_budget: dict | None = None

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def server_errors(self) -> int:
        return sum(n for s, n in self.statuses.items() if s >= 500)

    def percentile(self, q: float) -> float:
        lat = sorted(self.latencies)
        return lat[min(len(lat) - 1, int(round(q * (len(lat) - 1))))] if lat else float("nan")

    def record(self) -> dict[str, Any]:
        mib = lambda d: {str(k): round(v / 2**20, 1) for k, v in d.items()}
        return {
            "clients": self.clients, "duration_s": round(self.duration_s, 2), "requests": self.requests,
            "requests_per_s": round(self.requests / self.duration_s, 2) if self.duration_s else None,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())}, "server_errors": self.server_errors,
            "transport_errors": dict(self.transport_errors),
            "p50_ms": round(self.percentile(0.5) * 1000), "p95_ms": round(self.percentile(0.95) * 1000),
            "valid_checked": self.valid_checked, "wrong_answers": self.wrong_answers,
            "wrong_examples": self.wrong_examples[:5], "missing_retry_after": self.missing_retry_after,
            "bombs_sent": self.bombs, "bomb_bytes": self.bomb_bytes,
            "replica_idle_rss_mib": mib(self.idle_rss), "replica_peak_rss_mib": mib(self.peak_rss),
            "memory_budget": self.memory_budget,
        }

    def text(self) -> str:
        r = self.record()
        peak = max(self.peak_rss.values(), default=0) / 2**20
        idle = max(self.idle_rss.values(), default=0) / 2**20
        budget = (self.memory_budget or {}).get("decode_pool_mib")
        lines = [
            f"[loadtest] {r['requests']} requests from {self.clients} clients in {self.duration_s:.0f} s: "
            f"{r['requests_per_s']} req/s, p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms",
            f"[loadtest] statuses {r['statuses']}; 5xx {self.server_errors}; transport errors "
            f"{r['transport_errors'] or 0}; 429 without Retry-After {self.missing_retry_after}",
            f"[loadtest] valid answers checked {self.valid_checked}, equal to the unloaded answer: "
            f"{'all' if self.wrong_answers == 0 else f'NO, {self.wrong_answers} differ'}; "
            f"bombs sent {self.bombs} ({self.bomb_bytes} bytes each)",
            f"[loadtest] replica RSS: idle {idle:.0f} MiB, peak {peak:.0f} MiB over {len(self.peak_rss)} replica "
            f"process(es); stated decode-pool budget {budget} MiB",
        ]
        return "\n".join(lines)


def _answer(body: dict) -> tuple:
    return body.get("class"), tuple(sorted((body.get("votes") or {}).items()))


def run_loadtest(test: LoadTest, images: list[tuple[str, bytes]], token: str | None = None) -> LoadReport:
    """Unloaded reference answers, then ``test.clients`` clients for ``test.duration_s`` seconds; the figures."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    bomb = bomb_png(test.bomb_side) if test.bomb_every else b""
    ids = [f"loadtest/{k}/{name}" for k, (name, _) in enumerate(images)]
    with httpx.Client(base_url=test.url, timeout=test.timeout_s, headers=headers) as client:
        health = client.get("/healthz")
        if health.status_code != 200:
            raise DataError(f"{test.url}/healthz answered {health.status_code}: {health.text[:200]}")
        card = client.get("/model")
        if card.status_code != 200:
            raise DataError(f"{test.url}/model answered {card.status_code}: {card.text[:200]}")
        reference = {}
        for image_id, (name, data) in zip(ids, images):
            r = client.post("/predict", params={"id": image_id}, content=data,
                            headers={"Content-Type": "application/octet-stream"})
            if r.status_code != 200:
                raise DataError(f"{name}: the unloaded request answered {r.status_code}: {r.text[:300]}")
            reference[image_id] = _answer(r.json())

    report = LoadReport(clients=test.clients, duration_s=test.duration_s,
                        memory_budget=card.json()["serving"].get("memory_budget"), bomb_bytes=len(bomb))
    sampler = RssSampler(test.sample_s)
    report.idle_rss = dict(sampler.sample())
    lock = threading.Lock()
    counter = iter(range(10**12))
    stop_at = time.monotonic() + test.duration_s

    def client_loop() -> None:
        with httpx.Client(base_url=test.url, timeout=test.timeout_s, headers=headers) as c:
            while time.monotonic() < stop_at:
                with lock:
                    k = next(counter)
                is_bomb = bool(test.bomb_every) and k % test.bomb_every == test.bomb_every - 1
                if is_bomb:
                    image_id, data = f"loadtest/bomb/{k}", bomb
                else:
                    j = k % len(images)
                    image_id, data = ids[j], images[j][1]
                t0 = time.perf_counter()
                try:
                    r = c.post("/predict", params={"id": image_id}, content=data,
                               headers={"Content-Type": "image/png" if is_bomb else "application/octet-stream"})
                except httpx.HTTPError as exc:
                    with lock:
                        report.transport_errors[type(exc).__name__] += 1
                    continue
                elapsed = time.perf_counter() - t0
                wrong = None
                if r.status_code == 200 and not is_bomb:
                    got = _answer(r.json())
                    if got != reference[image_id]:
                        wrong = f"{image_id}: {got} under load, {reference[image_id]} unloaded"
                with lock:
                    report.statuses[r.status_code] += 1
                    report.latencies.append(elapsed)
                    report.bombs += is_bomb
                    if r.status_code == 200 and not is_bomb:
                        report.valid_checked += 1
                    if wrong:
                        report.wrong_answers += 1
                        report.wrong_examples.append(wrong)
                    if r.status_code == 429 and not r.headers.get("retry-after", "").isdigit():
                        report.missing_retry_after += 1

    t0 = time.monotonic()
    sampler.start()
    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(test.clients)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sampler.stop()
    report.duration_s = time.monotonic() - t0
    report.peak_rss = dict(sampler.peak)
    return report
