"""The HTTP service: `POST /v1/next`, `POST /v1/search`, `GET /healthz`, `/readyz`, `/metrics` (docs/SERVING.md).

The predictor loads in a background thread at startup (`/readyz` says 503 until it is loaded); requests are
answered through a `DynamicBatcher`. The per-request path is kept lean, as the load test measured it
(docs/BENCHMARKS.md): a pure ASGI middleware, orjson both ways, the GC frozen after loading, FAISS on BLAS for
small batches. Bad input is a 4xx with `{"error": reason}`; an unexpected error is a 500
whose `error_id` the log line carries.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from lvm_pipeline.inference import NextConcept, NextConceptPredictor
from lvm_pipeline.serving.batcher import BatcherStoppedError, DynamicBatcher, QueueFullError
from lvm_pipeline.serving.inputs import MAX_BODY_BYTES, BadInput, context_query, parse_body
from lvm_pipeline.serving.metrics import ServiceMetrics

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 30.0  # the longest a request waits for its batch
RETRY_AFTER_S = 1  # what a 503 tells the client to wait
FAISS_BLAS_FROM = 4  # FAISS searches a batch of at least this many queries as one matrix product (faiss 1.15: 128,000)
OPEN_ROUTES = ("/healthz", "/readyz")  # answered without the token
ROUTES = ("/v1/next", "/v1/search", "/healthz", "/readyz", "/metrics")


@dataclass(frozen=True)
class ServingSettings:
    max_batch: int = 64
    max_wait_ms: float = 5.0
    max_queue: int = 1024
    token: str | None = None  # LVM_API_TOKEN: every route but OPEN_ROUTES wants `Authorization: Bearer <token>`
    max_body_bytes: int = MAX_BODY_BYTES
    request_timeout_s: float = REQUEST_TIMEOUT_S


class _State:
    """The predictor once loaded (or why not), and the batcher that runs it."""

    def __init__(self, load: Callable[[], NextConceptPredictor], settings: ServingSettings):
        self.load, self.settings = load, settings
        self.predictor: NextConceptPredictor | None = None
        self.failure: str | None = None
        self.batcher = DynamicBatcher({"next": self._next, "search": self._search}, max_batch=settings.max_batch,
                                      max_wait_ms=settings.max_wait_ms, max_queue=settings.max_queue)
        self.metrics = ServiceMetrics(lambda: self.batcher.depth)
        self.batcher.on_batch = self.metrics.observe_batch

    def _next(self, queries):
        return self.predictor.predict_batch(queries)

    def _search(self, queries):
        return self.predictor.search_batch(queries)

    def load_in_background(self) -> None:
        def load() -> None:
            try:
                predictor = self.load()
            except Exception as error:  # the service stays up, not ready, and says why
                log.exception("loading the model failed")
                self.failure = f"loading failed: {error}"
                return
            self.metrics.model.info({"model": predictor.predictor.name, "checkpoint": str(predictor.checkpoint),
                                     "backend": predictor.backend, "search": predictor.search,
                                     "pid": str(os.getpid()),  # with --workers, which process answered a scrape
                                     "bank_version": predictor.bank.version, "encoder": str(predictor.encoder.name)})
            faiss.cvar.distance_compute_blas_threshold = FAISS_BLAS_FROM
            gc.collect()
            gc.freeze()  # the loaded model, bank and index never die: the collector stops scanning them per request
            self.predictor = predictor
            self.batcher.start()

        threading.Thread(target=load, name="lvm-load", daemon=True).start()

    @property
    def not_ready(self) -> str | None:
        if self.predictor is not None:
            return None
        return self.failure or "loading the model, the bank and its index"


def _error(status: int, reason: str, **extra) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return JSONResponse({"error": reason, **extra}, status_code=status, headers=headers)


async def _read_body(request: Request, cap: int) -> bytes:
    """The body, refused (413) over `cap` bytes by its Content-Length or by the bytes that come."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > cap):
        raise BadInput(413, f"the body is over {cap} bytes" if declared.isdigit() else "bad Content-Length")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise BadInput(413, f"the body is over {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(result: NextConcept, bank_version: str, queued_ms: float, started: float) -> dict:
    latency = result.latency_ms
    return {
        "model": result.model, "bank_version": bank_version, "context": result.context,
        "neighbours": [{"text": n.text, "score": n.score, "article_id": n.article_id, "row": n.row,
                        "concept_id": n.concept_id} for n in result.neighbours],  # 30x asdict's speed
        "latency_ms": {"encode": latency["encode"], "model": latency["predict"], "search": latency["decode"],
                       "queue": round(queued_ms, 3), "total": round((time.perf_counter() - started) * 1000, 3)},
    }


def create_app(predictor: NextConceptPredictor | Callable[[], NextConceptPredictor],
               settings: ServingSettings | None = None) -> FastAPI:
    """The service of `predictor`, or of what the callable `predictor` loads (in the background, at startup)."""
    settings = settings or ServingSettings()
    load = predictor if callable(predictor) and not isinstance(predictor, NextConceptPredictor) else (lambda: predictor)
    state = _State(load, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.load_in_background()
        try:
            yield
        finally:
            await asyncio.to_thread(state.batcher.stop)

    app = FastAPI(title="lvm-pipeline", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = state
    app.add_middleware(_Guard, state=state)

    @app.get("/healthz")
    async def healthz():
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz():
        reason = state.not_ready
        return _error(503, reason) if reason else {"status": "ready"}

    @app.get("/metrics")
    async def metrics():
        return Response(state.metrics.text(), media_type=CONTENT_TYPE_LATEST)

    async def answer(request: Request, kind: str, route: str):
        started = time.perf_counter()
        try:
            reason = state.not_ready
            if reason:
                return _error(503, f"not ready: {reason}")
            query = context_query(parse_body(await _read_body(request, settings.max_body_bytes)),
                                  state.predictor.dimension, kind == "next" and state.predictor.needs_texts)
            future = state.batcher.submit(kind, query)
        except BadInput as bad:
            return _error(bad.status, bad.reason)
        except (QueueFullError, BatcherStoppedError) as busy:
            return _error(503, str(busy))
        try:
            batched = await asyncio.wait_for(asyncio.wrap_future(future), settings.request_timeout_s)
        except TimeoutError:
            future.cancel()
            return _error(503, f"no answer within {settings.request_timeout_s:g} s")
        except BatcherStoppedError as stopped:
            return _error(503, str(stopped))
        body = _answer(batched.result, state.predictor.bank.version, batched.queued_s * 1000, started)
        state.metrics.observe_latency(route, body["latency_ms"])
        return Response(orjson.dumps(body), media_type="application/json")  # not FastAPI's generic encoder: 10x

    @app.post("/v1/next")
    async def next_concept(request: Request):
        """The bank's k texts nearest the model's predicted next concept."""
        return await answer(request, "next", "/v1/next")

    @app.post("/v1/search")
    async def search(request: Request):
        """The vector baseline: the context's own vector searched in the bank."""
        return await answer(request, "search", "/v1/search")

    return app


SPEC_VARIABLE = "LVM_SERVE_SPEC"


def serve_spec(checkpoint: Path, backend: str, search: str, settings: ServingSettings) -> str:
    """What each worker of `lvm-pipeline serve` builds its app from (the token stays in LVM_API_TOKEN)."""
    return json.dumps({"checkpoint": str(checkpoint), "backend": backend, "search": search,
                       "settings": {k: v for k, v in asdict(settings).items() if k != "token"}})


def app_from_environment() -> FastAPI:
    """The app of one worker process (uvicorn's factory): the model of LVM_SERVE_SPEC on the configured bank."""
    from lvm_pipeline.config import settings as environment
    from lvm_pipeline.datasets.bank import open_bank
    from lvm_pipeline.encoders import SentenceEncoder

    config = environment()
    if not config.serve_spec:
        raise RuntimeError(f"{SPEC_VARIABLE} is not set: start the service with lvm-pipeline serve")
    spec = json.loads(config.serve_spec)
    checkpoint, backend, search = Path(spec["checkpoint"]), spec["backend"], spec["search"]
    return create_app(lambda: NextConceptPredictor(checkpoint, open_bank(config.exports_dir),
                                                   SentenceEncoder(config.encoder), backend, search),
                      ServingSettings(**spec["settings"], token=config.api_token))


class _Guard:
    """Pure ASGI middleware (Starlette's BaseHTTPMiddleware costs a task and a stream per request): the token, the
    in-flight gauge, the request counter, and a 500 with an error id for what escapes."""

    def __init__(self, app, state: _State):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in ROUTES else "other"
        metrics, token, status = self.state.metrics, self.state.settings.token, []

        async def counted(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        metrics.in_flight.inc()
        try:
            if token and route not in OPEN_ROUTES and not _authorized(scope, token):
                response = _error(401, "missing or wrong bearer token")
                response.headers["WWW-Authenticate"] = "Bearer"
                await response(scope, receive, counted)
                return
            try:
                await self.app(scope, receive, counted)
            except Exception:
                error_id = uuid.uuid4().hex[:12]
                log.exception("error %s answering %s %s", error_id, scope["method"], scope["path"])
                if status:  # the answer had begun: nothing more can be sent
                    raise
                await _error(500, "internal error", error_id=error_id)(scope, receive, counted)
        finally:
            metrics.in_flight.dec()
            metrics.requests.labels(route, str(status[0] if status else 500)).inc()


def _authorized(scope, token: str) -> bool:
    header = next((value for name, value in scope["headers"] if name == b"authorization"), b"").decode("latin-1")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
