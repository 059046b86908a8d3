"""Bounded work per replica, request deadlines and the optional bearer token, without Ray or HTTP.

A ``Gate`` admits at most ``max_active`` pieces of work at once and lets at most ``max_queued`` more wait; one more is
refused at once with ``Busy`` (the endpoint answers 429 with ``Retry-After``), so a flood never builds an unbounded
queue of decoded images in memory. A slot is held until the work it admitted has finished, even when the request
that asked for it has timed out (a worker thread cannot be cancelled), so a timed-out request cannot be replaced by
new work while its thread still runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import math
from dataclasses import dataclass
from typing import AsyncIterator

from meddiff.errors import ConfigError
from meddiff.serving.upload import UploadError

MIN_TOKEN_CHARS = 16


class Busy(UploadError):
    """A gate is full: HTTP 429; ``limit`` names it, ``retry_after`` is the whole seconds a client should wait."""

    def __init__(self, limit: str, message: str, retry_after: int) -> None:
        super().__init__(429, message)
        self.limit = limit
        self.retry_after = retry_after


class Gate:
    """At most ``max_active`` holders at once and ``max_queued`` waiting; ``admit()`` raises Busy beyond that.

    ``retry_after_s`` is the Retry-After hint of a refusal (about one piece of work's duration).
    Single event loop only (a Serve replica's), like asyncio.Semaphore.
    """

    def __init__(self, name: str, max_active: int, max_queued: int, retry_after_s: float = 1.0) -> None:
        if max_active < 1 or max_queued < 0:
            raise ConfigError(f"gate {name}: expected max_active >= 1 and max_queued >= 0, got {max_active}, "
                              f"{max_queued}")
        self.name = name
        self.max_active = max_active
        self.max_queued = max_queued
        self.retry_after = max(1, math.ceil(retry_after_s))
        self._semaphore = asyncio.Semaphore(max_active)
        self._admitted = 0  # active + waiting

    @property
    def admitted(self) -> int:
        return self._admitted

    def _refuse(self) -> Busy:
        return Busy(self.name, f"the {self.name} limit is reached: {self.max_active} running and {self.max_queued} "
                               f"waiting on this replica ({self.name}: max {self.max_active} at once, queue "
                               f"{self.max_queued}); retry after {self.retry_after} s", self.retry_after)

    def check(self) -> None:
        """Busy when a new piece of work would be refused now (to refuse early, before spending other slots)."""
        if self._admitted >= self.max_active + self.max_queued:
            raise self._refuse()

    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Hold one slot for the block (waiting in the queue for it if needed); Busy at once when the queue is full."""
        self.check()
        self._admitted += 1
        try:
            await self._semaphore.acquire()
        except BaseException:
            self._admitted -= 1
            raise
        try:
            yield
        finally:
            self._semaphore.release()
            self._admitted -= 1

    async def run(self, work, timeout_s: float, what: str):
        """Await ``work`` (a coroutine) under a slot; UploadError(504) after ``timeout_s`` (queueing included).

        On timeout the work goes on (a thread cannot be stopped) and keeps its slot until it ends.
        """
        try:
            self.check()
        except Busy:
            work.close()
            raise

        async def held():
            async with self.admit():
                return await work

        task = asyncio.ensure_future(held())
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout_s)
        except asyncio.TimeoutError:
            task.add_done_callback(_consume)
            raise UploadError(504, f"{what} took longer than the request timeout of {timeout_s:g} s "
                                   f"(request_timeout_s); the server is overloaded or the image too large, retry later "
                                   f"or send a smaller image") from None


def _consume(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log "exception was never retrieved"


async def read_within(coroutine, timeout_s: float):
    """Await reading a request body; UploadError(408) when the client is slower than ``timeout_s`` (slowloris)."""
    try:
        return await asyncio.wait_for(coroutine, timeout_s)
    except asyncio.TimeoutError:
        raise UploadError(408, f"the request body did not arrive within {timeout_s:g} s (body_timeout_s); send the "
                               f"whole image at once") from None


# --- bearer token -------------------------------------------------------------------------------------------------

def check_token(token: str | None, env_name: str) -> str:
    """The token read from env var ``env_name``: ConfigError when unset or shorter than MIN_TOKEN_CHARS (never shown)."""
    if not token:
        raise ConfigError(f"--token-env {env_name}: the environment variable {env_name} is not set or empty; set it "
                          f"to a secret of at least {MIN_TOKEN_CHARS} characters (e.g. `export {env_name}=$(openssl "
                          f"rand -hex 24)`)")
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"--token-env {env_name}: the token in {env_name} has {len(token)} characters; at least "
                          f"{MIN_TOKEN_CHARS} expected")
    return token


def authorize(header: str | None, token: str) -> None:
    """Check an Authorization header against the token (constant-time); UploadError(401) otherwise."""
    if header is None:
        raise UploadError(401, "this endpoint needs a bearer token: send the header 'Authorization: Bearer <token>'")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise UploadError(401, "malformed Authorization header; expected 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(value.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8")):
        raise UploadError(401, "invalid bearer token")


# --- memory --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MemoryBudget:
    """Peak decoded-pixel memory of a replica's decode pool: max_pixels x bytes per pixel x max_concurrent."""

    max_pixels: int
    bytes_per_pixel: int
    max_concurrent: int

    @property
    def per_request_bytes(self) -> int:
        return self.max_pixels * self.bytes_per_pixel

    @property
    def total_bytes(self) -> int:
        return self.per_request_bytes * self.max_concurrent

    def record(self) -> dict:
        return {"max_pixels": self.max_pixels, "bytes_per_pixel": self.bytes_per_pixel,
                "max_concurrent": self.max_concurrent, "per_request_mib": round(self.per_request_bytes / 2**20, 1),
                "decode_pool_mib": round(self.total_bytes / 2**20, 1),
                "rule": "max_pixels x bytes per decoded pixel x max_concurrent (requests waiting in the queue hold "
                        "only their compressed body, at most max_upload_bytes each)"}
