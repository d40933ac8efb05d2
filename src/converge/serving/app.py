"""The HTTP API: routes, and how each failure maps to a status code.

    POST /v1/models/{name}/predict   a JSON body in the plugin's request schema -> {"answers": [...]}
    GET  /v1/models, /v1/models/{name}   manifest summaries (inputs, request schema)
    GET  /healthz    alive;   GET /readyz   every model loaded, verified and warmed up, and not stopping
    GET  /metrics    Prometheus text format
    GET  /v1/models/{name}/drift   the drift score of each statistic over the recent window (converge.runtime.drift)

Statuses: 400 a body that is not JSON, 413 a body over the size limit, 422 a body the model cannot take (the
message names the field), 404 an unknown model, 503 (with Retry-After) a full queue or a stopping server, 504 a
request past its deadline (`--timeout-ms`, or its own `X-Timeout-Ms` header); 499 in the metrics, a client that
left before its answer. A 5xx other than these is a bug.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import sys
import time
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from converge.errors import ConvergeError
from converge.runtime.predict import finite_answer
from converge.serving.batcher import Batcher, Overloaded
from converge.serving.metrics import Metrics
from converge.serving.model import ServedModel
from converge.serving.request_log import RequestLog

MAX_BODY_BYTES = 8 * 1024 * 1024


@dataclass
class Settings:
    max_batch_size: int = 64
    max_wait_ms: float | None = None  # None: the batcher's default for the model (see converge.serving.batcher)
    max_queue: int = 1024
    timeout_ms: float = 10_000.0
    log_requests: Path | None = None  # request logging: off unless a folder is given
    log_sample: float = 0.1


class Server:
    """The models, their batchers and metrics, and the ASGI app serving them (`Server` itself, see `__call__`)."""

    def __init__(self, models: dict[str, ServedModel], settings: Settings) -> None:
        self.models, self.settings = models, settings
        self.metrics = Metrics()
        self.batchers: dict[str, Batcher] = {}
        self.logs: dict[str, RequestLog] = {}
        self.ready = False
        self.answered = 0  # predict responses sent, whatever their status (said when the server stops)
        self.app = Starlette(routes=[
            Route("/healthz", self.healthz), Route("/readyz", self.readyz), Route("/metrics", self.prometheus),
            Route("/v1/models", self.list_models), Route("/v1/models/{name}", self.describe),
            Route("/v1/models/{name}/predict", self.predict, methods=["POST"]),
            Route("/v1/models/{name}/drift", self.drift),
        ], lifespan=self.lifespan)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI app: a predict request goes straight to `predict`, anything else through Starlette.

        Predict is the one route under load, and Starlette's middleware and routing took 14% of the server's
        CPU a request (py-spy, a trivial model at saturation). The route stays in Starlette's table too, which
        answers its other methods (405).
        """
        name = _predict_route(scope)
        if name is None:
            await self.app(scope, receive, send)
            return
        scope["path_params"] = {"name": name}
        try:
            response = await self.predict(HttpRequest(scope, receive))
        except Exception:  # what Starlette's ServerErrorMiddleware does for the other routes
            traceback.print_exc()
            response = _error(500, "internal server error (a bug: the traceback is in the server's log)")
        await response(scope, receive, send)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        for name, model in self.models.items():
            wait = None if self.settings.max_wait_ms is None else self.settings.max_wait_ms / 1000
            batcher = Batcher(model.answer, self.settings.max_batch_size, wait,
                              self.settings.max_queue, self.metrics.batch_rows.labels(model=name).observe,
                              batch_seconds=model.row_seconds * self.settings.max_batch_size)
            batcher.start()
            self.batchers[name] = batcher
            if self.settings.log_requests is not None:
                self.logs[name] = RequestLog(self.settings.log_requests / name, model.preprocessor,
                                             self.settings.log_sample)
            self.metrics.queue_depth.labels(model=name).set_function(lambda b=batcher: b.depth)
            self.metrics.model_info.labels(model=name).info(
                {key: str(value) for key, value in model.summary().items() if key in ("plugin", "task", "format",
                                                                                      "sha256", "created")})
        # What start-up made (sessions, modules, the bundles' state) lives as long as the server: frozen out of
        # the collector, a full collection no longer walks it (p99 at 1,600 req/s on digits: 18-28 ms -> 12-13)
        gc.freeze()
        self.ready = True
        try:
            yield
        finally:  # uvicorn gets here once every accepted request has been answered
            self.ready = False
            for batcher in self.batchers.values():
                await batcher.stop()
            for log in self.logs.values():
                log.close()
            print(f"converge serve: stopped, {self.answered} predict requests answered", file=sys.stderr, flush=True)

    async def healthz(self, request: HttpRequest) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(self, request: HttpRequest) -> Response:
        status = 200 if self.ready else 503
        return JSONResponse({"ready": self.ready, "models": sorted(self.models)}, status_code=status)

    async def prometheus(self, request: HttpRequest) -> Response:
        for name, model in self.models.items():
            if model.drift:
                for statistic, score in model.drift.report()["statistics"].items():
                    self.metrics.drift.labels(model=name, statistic=statistic).set(score["psi"])
        return Response(self.metrics.render(), media_type=self.metrics.content_type)

    async def drift(self, request: HttpRequest) -> Response:
        model = self.models.get(request.path_params["name"])
        if model is None:
            return self._unknown(request.path_params["name"])
        if model.drift is None:
            return _error(404, f"model '{model.name}' has no drift reference: export its bundle again")
        return JSONResponse(model.drift.report())

    async def list_models(self, request: HttpRequest) -> Response:
        return JSONResponse({"models": [model.summary() for model in self.models.values()]})

    async def describe(self, request: HttpRequest) -> Response:
        model = self.models.get(request.path_params["name"])
        if model is None:
            return self._unknown(request.path_params["name"])
        return JSONResponse(model.summary())

    async def predict(self, request: HttpRequest) -> Response:
        name = request.path_params["name"]
        started = time.monotonic()
        if name not in self.models:
            return self._unknown(name)
        response = await self._predict(self.models[name], request, started)
        self.metrics.requests.labels(model=name, status=str(response.status_code)).inc()
        self.metrics.latency.labels(model=name).observe(time.monotonic() - started)
        self.answered += 1
        return response

    async def _predict(self, model: ServedModel, request: HttpRequest, started: float) -> Response:
        try:
            deadline = started + float(request.headers.get("x-timeout-ms", self.settings.timeout_ms)) / 1000
        except ValueError:
            return _error(400, "X-Timeout-Ms: expected a number of milliseconds")
        body = await _body(request)
        if body is None:
            return _error(413, f"body: over the limit of {MAX_BODY_BYTES} bytes")
        try:
            parsed = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:  # RecursionError: nested too deep
            return _error(400, f"body: not valid JSON ({error})")
        try:
            requests = model.preprocessor.from_json(parsed)
            for one in requests:
                model.check(one)
        except ConvergeError as error:
            return _error(422, str(error))
        if not self.ready:
            return _error(503, "the server is stopping", retry=True)
        try:
            future = self.batchers[model.name].submit(requests)
        except Overloaded:
            return _error(503, f"model '{model.name}' has {self.settings.max_queue} requests waiting: "
                               f"retry later", retry=True)
        answers = await self._answer(future, request, deadline)
        if isinstance(answers, Response):
            return answers
        if model.name in self.logs:
            self.logs[model.name].log(requests, answers)
        return _answers(answers)

    async def _answer(self, future: asyncio.Future, request: HttpRequest,
                      deadline: float) -> list[dict[str, Any]] | Response:
        """The answers, or 504 past the deadline; a client that disconnects cancels its request."""
        ended: list[tuple[int, str]] = []  # why the future was cancelled, if it was

        def end(status: int, why: str) -> None:
            ended.append((status, why))
            future.cancel()  # leaves the queue, or its answer is dropped when its batch returns

        loop = asyncio.get_running_loop()
        timer = loop.call_later(max(0.0, deadline - time.monotonic()), end, 504,
                                "deadline passed before the answer was ready")
        # nobody reads a 499 (nginx's "client closed request"): it keeps the count in the metrics
        watcher = loop.create_task(_disconnect(request, lambda: end(
            499, "the client disconnected before its answer was ready")))
        try:
            return await future
        except asyncio.CancelledError:
            if not ended:  # this handler was cancelled, not its request
                raise
            return _error(*ended[0])
        finally:
            timer.cancel()
            watcher.cancel()

    def _unknown(self, name: str) -> Response:
        return _error(404, f"unknown model '{name}' (served: {', '.join(sorted(self.models))})")


async def _body(request: HttpRequest) -> bytes | None:
    """The body, or None past MAX_BODY_BYTES (read no further: an oversized body is never held whole)."""
    if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _disconnect(request: HttpRequest, then: Callable[[], None]) -> None:
    """Calls `then` when the client goes away (the body was read already: what is left to receive is the
    disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    then()


def _predict_route(scope: Scope) -> str | None:
    """The model a `POST /v1/models/{name}/predict` names, else None."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    parts = scope["path"].split("/")  # "", "v1", "models", name, "predict"
    if len(parts) == 5 and parts[1] == "v1" and parts[2] == "models" and parts[3] and parts[4] == "predict":
        return parts[3]
    return None


def _answers(answers: list[dict[str, Any]]) -> Response:
    try:
        content = json.dumps({"answers": answers}, allow_nan=False)
    except ValueError:  # as `converge predict` writes them: null, and the answer flagged non_finite
        content = json.dumps({"answers": [_finite(answer) for answer in answers]})
    return Response(content, media_type="application/json")


def _finite(answer: dict[str, Any]) -> dict[str, Any]:
    try:
        json.dumps(answer, allow_nan=False)
        return answer
    except ValueError:
        return finite_answer(answer)


def _error(status: int, message: str, retry: bool = False) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers={"Retry-After": "1"} if retry else None)
