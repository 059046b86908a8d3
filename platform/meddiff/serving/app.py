"""The Ray Serve application: a FastAPI ingress over ``ImageClassifier`` with dynamic request batching.

    POST /predict[?explain=true][&id=...]   an image -> {class, class_name, votes, prob, uncertainty, n_draws, model_id, ...}
    GET  /healthz                            {"status": "ok", model_id, classes}
    GET  /model                              the checkpoint's metadata.json, the serving settings and limits

Hostile load: decoding + prediction and explanations each pass a ``serving.limits.Gate`` (max_concurrent running,
max_queued waiting; max_explain / explain_queue) and a full gate answers 429 with Retry-After at once; the work of a
request is bounded by request_timeout_s (504) and reading its body by body_timeout_s (408). With ``token_env`` every
route but /healthz needs ``Authorization: Bearer <token>`` (401 with WWW-Authenticate otherwise).

The body of /predict is either ``multipart/form-data`` with a ``file`` field (and an optional ``id`` field) or the raw
image file with an image Content-Type (``id`` then goes in the query). The id seeds the noise (see ``classifier``).
Requests are checked and decoded one by one (a bad body gets its own 4xx, see ``upload``), then batched by
``@serve.batch`` into one ``predict_pixels`` call of the predictor core that batch scoring uses; the model runs in a
worker thread so the replica keeps accepting and batching requests meanwhile.

``serve run meddiff.serving.app:build_app checkpoint=runs/demo-pneumonia`` or ``serve run infra/serve_config.yaml``
deploy it; ``meddiff serve --checkpoint DIR`` starts a local Ray cluster and runs it in the foreground.
"""

# No `from __future__ import annotations`: FastAPI must see the real Request type on the Serve-wrapped methods.
import asyncio
import os
from typing import Any, Mapping

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from ray import serve
from starlette.datastructures import UploadFile

from meddiff.serving.classifier import ImageClassifier, ServeSettings, serving_referral
from meddiff.serving.limits import Busy, Gate, MemoryBudget, authorize, check_token, read_within
from meddiff.serving.upload import (UploadError, UploadLimits, body_kind, check_content_length, check_image_id,
                                    content_id)

DEPLOYMENT_NAME = "Classifier"
# room for the multipart envelope (boundaries, part headers, the id field) around a file of max_bytes
_ENVELOPE_BYTES = 64 * 1024

# FastAPI's own /docs and /openapi.json would bypass the bearer token: no docs page; the schema is a route of the
# deployment (GET /openapi.json, token-checked like /model)
api = FastAPI(
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
    title="meddiff",
    description="A conditional diffusion model used as a medical image classifier: votes, uncertainty and "
                "counterfactual explanations for one image at a time.",
)


async def read_upload(request: Request, limits: UploadLimits) -> tuple[bytes, str | None]:
    """The image file's bytes and the ``id`` form field (None when absent) of a /predict request, or UploadError."""
    check_content_length(request.headers.get("content-length"), limits)
    kind = body_kind(request.headers.get("content-type"))
    cap = limits.max_bytes + (_ENVELOPE_BYTES if kind == "multipart" else 0)
    chunks, size = [], 0
    async for chunk in request.stream():  # counted while reading: a chunked body has no Content-Length
        size += len(chunk)
        if size > cap:
            raise UploadError(413, f"request body is over the {limits.max_bytes}-byte limit "
                                   f"({limits.max_bytes / 2**20:.1f} MiB); send a smaller image")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
        raise UploadError(400, "the request body is empty; send an image file (multipart field 'file' or the raw "
                               "file with an image Content-Type)")
    if kind == "raw":
        return body, None
    return await _multipart_file(request, body)


async def _multipart_file(request: Request, body: bytes) -> tuple[bytes, str | None]:
    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=4, max_part_size=64 * 1024)
    except Exception as exc:  # starlette's MultiPartException, or the HTTPException(400) it turns into
        detail = getattr(exc, "detail", None) or getattr(exc, "message", None) or str(exc)
        raise UploadError(400, f"malformed multipart/form-data body ({detail}); send one file in a field named 'file', "
                               "e.g. curl -F file=@image.png") from None
    try:
        upload = form.get("file")
        if upload is None:
            raise UploadError(422, f"the multipart form has no 'file' field (fields: {sorted(form.keys()) or 'none'}); "
                                   "send the image as -F file=@image.png")
        if not isinstance(upload, UploadFile):
            raise UploadError(422, "the 'file' field is text, not a file upload; use -F file=@image.png (with the @)")
        image_id = form.get("id")
        if image_id is not None and not isinstance(image_id, str):
            raise UploadError(422, "the 'id' field must be text, not a file")
        return await upload.read(), image_id
    finally:
        await form.close()


# decoded bytes per pixel and channel: the 8-bit check decode (upload.inspect_image), the decoder's own 8-bit image,
# its float32 copy and 2 bytes of slack for 16-bit files
BYTES_PER_PIXEL_CHANNEL = 8


def _error(exc: UploadError) -> JSONResponse:
    body: dict[str, Any] = {"detail": exc.message}
    headers = {}
    if isinstance(exc, Busy):
        body["limit"] = exc.limit
        headers["Retry-After"] = str(exc.retry_after)
    elif exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="meddiff"'
    return JSONResponse(body, status_code=exc.status, headers=headers)


def memory_budget(core: ImageClassifier, settings: ServeSettings) -> MemoryBudget:
    decoder = core.predictor.decoder  # the checkpoint's data.max_pixels (the default for bundles without one)
    return MemoryBudget(decoder.max_pixels, BYTES_PER_PIXEL_CHANNEL * decoder.channels, settings.max_concurrent)


@serve.deployment(name=DEPLOYMENT_NAME, max_ongoing_requests=64, health_check_period_s=10)
@serve.ingress(api)
class Classifier:
    """One replica: one loaded checkpoint. ``settings`` are ``ServeSettings`` fields (a plain mapping)."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = ServeSettings.from_mapping(settings)
        self.core = ImageClassifier.from_settings(self.settings)
        self.limits = self.settings.limits()
        self.predict_batch.set_max_batch_size(self.settings.max_batch_size)
        self.predict_batch.set_batch_wait_timeout_s(self.settings.batch_wait_timeout_s)
        s = self.settings
        self.token = check_token(os.environ.get(s.token_env), s.token_env) if s.token_env else None
        self.work = Gate("decode/predict", s.max_concurrent, s.max_queued, retry_after_s=1)
        self.explains = Gate("explain", s.max_explain, s.explain_queue, retry_after_s=10)
        self.budget = memory_budget(self.core, s)

    def _authorize(self, request: Request) -> None:
        if self.token is not None:
            authorize(request.headers.get("authorization"), self.token)

    @api.get("/healthz")
    def healthz(self) -> dict[str, Any]:
        return self.core.health()

    @api.get("/model")
    def model(self, request: Request) -> Any:
        try:
            self._authorize(request)
        except UploadError as exc:
            return _error(exc)
        card = self.core.model_card()
        s = self.settings
        card["serving"]["load_limits"] = {
            "max_concurrent": s.max_concurrent, "max_queued": s.max_queued, "max_explain": s.max_explain,
            "explain_queue": s.explain_queue, "request_timeout_s": s.request_timeout_s,
            "body_timeout_s": s.body_timeout_s, "bearer_token": self.token is not None}
        card["serving"]["memory_budget"] = self.budget.record()
        return card

    @api.get("/openapi.json", include_in_schema=False)
    def openapi(self, request: Request) -> Any:
        try:
            self._authorize(request)
        except UploadError as exc:
            return _error(exc)
        from fastapi.openapi.utils import get_openapi

        return get_openapi(title=api.title, version="1", description=api.description, routes=api.routes)

    @api.post("/predict")
    async def predict(
        self,
        request: Request,
        explain: bool = Query(False, description="also return a counterfactual PNG (base64) under every class"),
        id: str | None = Query(None, description="image id that seeds the noise (default: sha256 of the file)"),
    ) -> Any:
        try:
            self._authorize(request)
            if explain and self.core.explain_cfg is None:
                raise UploadError(400, f"explain=true needs a method with counterfactuals; this endpoint serves a "
                                       f"{self.core.predictor.method!r} model")
            data, form_id = await read_within(read_upload(request, self.limits), self.settings.body_timeout_s)
            if form_id is not None and id is not None and form_id != id:
                raise UploadError(422, f"two different ids: form field {form_id!r} and query {id!r}; give one")
            image_id = check_image_id(form_id if form_id is not None else id) or content_id(data)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.settings.request_timeout_s
            if explain:  # refuse an explain flood before spending a decode slot on it
                self.explains.check()
            pixels, result = await self.work.run(self._decode_predict(data, image_id), self.settings.request_timeout_s,
                                                 "decoding and scoring the image")
            if explain:
                remaining = max(0.001, deadline - loop.time())
                result["explanation"] = await self.explains.run(
                    asyncio.to_thread(self.core.explain, pixels, image_id), remaining, "the explanation")
        except UploadError as exc:
            return _error(exc)
        return result

    async def _decode_predict(self, data: bytes, image_id: str) -> tuple[Any, dict[str, Any]]:
        pixels, _ = await asyncio.to_thread(self.core.decode, data)
        return pixels, await self.predict_batch((pixels, image_id))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def predict_batch(self, items: list[tuple[Any, str]]) -> list[dict[str, Any]]:
        """Requests collected by Serve -> one predictor call; a list of the same length back."""
        pixels = [p for p, _ in items]
        ids = [i for _, i in items]
        return await asyncio.to_thread(self.core.predict, pixels, ids)


def build_app(args: Mapping[str, Any]) -> serve.Application:
    """Application builder for ``serve run`` / ``serve deploy``: ``args`` are ServeSettings fields (checkpoint, ...).

    Checked here, on the driver, so a typo in the config fails before any replica starts.
    """
    from pathlib import Path

    from meddiff.bundle import read_bundle

    settings = ServeSettings.from_mapping(args)
    bundle = read_bundle(settings.checkpoint)  # a missing or broken checkpoint is a clear error now, not a crashing replica
    serving_referral(settings, bundle.metadata)  # so is a missing referral or one made for another model
    # replicas may run in another working directory: hand them the absolute path
    return Classifier.bind({**args, "checkpoint": str(Path(settings.checkpoint).expanduser().resolve())})


def run_server(settings: Mapping[str, Any], host: str = "127.0.0.1", port: int = 8000) -> None:
    """``meddiff serve``: Ray (joins RAY_ADDRESS or starts a local cluster), Serve on host:port, the app, until Ctrl-C
    or SIGTERM. Both shut Serve down and, when this process started the Ray cluster, ``ray.shutdown()``, then end
    whatever child process of that cluster still runs (dashboard, runtime-env and log agents, raylet, GCS)."""
    import signal
    import time

    from meddiff.raycluster import ensure_ray, stop_local_cluster

    parsed = ServeSettings.from_mapping(settings)
    if parsed.token_env:  # refuse to start without a usable token (the replicas read the same variable)
        check_token(os.environ.get(parsed.token_env), parsed.token_env)
    app = build_app(settings)

    def _stop(signum, frame):
        raise KeyboardInterrupt

    started = False
    try:
        started = ensure_ray()
        # after ray.init, which installs its own fatal-signal handler for SIGTERM (it aborts the driver mid-cleanup)
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background (SIG_IGN)
        serve.start(http_options={"host": host, "port": port})
        try:
            serve.run(app, name="meddiff", route_prefix="/")
            auth = f"; bearer token from ${parsed.token_env}" if parsed.token_env else ""
            print(f"[serve] meddiff endpoint on http://{host}:{port} (POST /predict, GET /healthz, GET /model){auth}; "
                  "Ctrl-C stops it", flush=True)
            while True:
                time.sleep(3600)
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not interrupt the cleanup
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            print("[serve] stopping", flush=True)
            serve.shutdown()
    except KeyboardInterrupt:
        pass
    finally:
        if started:
            stop_local_cluster()
