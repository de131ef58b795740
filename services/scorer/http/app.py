"""The scorer's HTTP routes as an ASGI application (FastAPI), with its OpenAPI document.

Every route hands its request to ``ScoringApi`` and answers what it decides; scoring runs in
the server's thread pool, never on the event loop. Around the routes: a body size limit (413
before the body is read when ``Content-Length`` says so, and as soon as a chunked body passes
it), the request metrics by route template, and JSON for the framework's own refusals (an
unknown route, a wrong method). The OpenAPI document (``GET /openapi.json``) describes the
request and answer bodies from the domain's ``.avsc`` files.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response as HttpResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from services.schematools.jsonschema import JsonSchema
from services.scorer.http.api import (
    HEALTH_ROUTE,
    METRICS_ROUTE,
    OTHER_ROUTE,
    READY_ROUTE,
    SCORE_ROUTE,
    Response,
    ScoringApi,
    error_response,
)
from services.scorer.http.openapi import Documented, openapi_document
from services.scorer.http.v2 import HEADER_LENGTH

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]

V2_LIVE = "/v2/health/live"
V2_READY = "/v2/health/ready"
V2_SERVER = "/v2"
V2_MODEL = "/v2/models/{model}"
V2_MODEL_READY = "/v2/models/{model}/ready"
V2_INFER = "/v2/models/{model}/infer"
OPENAPI_ROUTE = "/openapi.json"


def scoring_app(api: ScoringApi, version: str, prediction: JsonSchema) -> Asgi:
    """The ASGI application: the routes, wrapped in the metrics and the body size limit.
    ``prediction``: the JSON Schema of an answered prediction (``json_schema_of`` the
    predictions ``.avsc``)."""
    app = FastAPI(
        title="streamml scorer",
        version=version,
        docs_url=None,
        redoc_url=None,
        openapi_url=OPENAPI_ROUTE,
    )
    documented = Documented(api.spec, prediction, api.max_vectors, api.max_body_bytes)
    _v1_routes(app, api, documented)
    _v2_routes(app, api, documented, version)
    app.add_exception_handler(HTTPException, _refusals())
    app.openapi = lambda: openapi_document(app, documented)  # type: ignore[method-assign]
    return Observed(BodyLimit(app, api.max_body_bytes), api)


def _v1_routes(app: FastAPI, api: ScoringApi, documented: Documented) -> None:
    @app.post(SCORE_ROUTE, **documented.score())
    async def score(domain: str, request: Request) -> HttpResponse:
        body = await request.body()
        return _answer(await run_in_threadpool(api.score, domain, body))

    @app.get(HEALTH_ROUTE, **documented.health())
    async def healthz() -> HttpResponse:
        return _answer(api.healthz())

    @app.get(READY_ROUTE, **documented.ready())
    async def readyz() -> HttpResponse:
        return _answer(api.readyz())

    @app.get(METRICS_ROUTE, **documented.metrics())
    async def metrics() -> HttpResponse:
        return _answer(await run_in_threadpool(api.metrics_page))


def _v2_routes(app: FastAPI, api: ScoringApi, documented: Documented, version: str) -> None:
    @app.get(V2_SERVER, **documented.v2_server())
    async def v2_server() -> HttpResponse:
        return _answer(api.v2_server(version))

    @app.get(V2_LIVE, **documented.v2_live())
    async def v2_live() -> HttpResponse:
        return _answer(api.v2_live())

    @app.get(V2_READY, **documented.v2_ready())
    async def v2_ready() -> HttpResponse:
        return _answer(api.v2_ready())

    @app.get(V2_MODEL, **documented.v2_model())
    async def v2_model(model: str) -> HttpResponse:
        return _answer(api.v2_model(model))

    @app.get(V2_MODEL_READY, **documented.v2_model_ready())
    async def v2_model_ready(model: str) -> HttpResponse:
        return _answer(api.v2_model_ready(model))

    @app.post(V2_INFER, **documented.v2_infer())
    async def v2_infer(model: str, request: Request) -> HttpResponse:
        body = await request.body()
        header_length = request.headers.get(HEADER_LENGTH)
        return _answer(await run_in_threadpool(api.v2_infer, model, body, header_length))


def _refusals() -> Callable[[Request, Exception], Awaitable[HttpResponse]]:
    """The framework's own refusals (no route, a wrong method) as JSON errors."""
    routes = ", ".join(
        f"{'POST' if path in (SCORE_ROUTE, V2_INFER) else 'GET'} {path}"
        for path in (SCORE_ROUTE, V2_INFER, V2_MODEL, V2_READY, HEALTH_ROUTE, READY_ROUTE)
    )

    async def refused(request: Request, exc: Exception) -> HttpResponse:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            detail = f"no route {request.url.path}; routes: {routes}"
            return _answer(error_response(404, "not_found", detail))
        if exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            detail = f"{request.url.path} takes {allowed}, not {request.method}"
            refusal = error_response(405, "method_not_allowed", detail)
            return _answer(refusal, {"Allow": allowed})
        return _answer(error_response(exc.status_code, "refused", str(exc.detail)))

    return refused


def _answer(response: Response, headers: dict[str, str] | None = None) -> HttpResponse:
    return HttpResponse(
        response.body,
        status_code=response.status,
        media_type=response.content_type,
        headers={**dict(response.headers), **(headers or {})},
    )


class Observed:
    """Counts every answer by route template and status, and times it."""

    def __init__(self, app: Asgi, api: ScoringApi) -> None:
        self._app = app
        self._metrics = api.metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, sending)
        finally:
            label = str(getattr(scope.get("route"), "path", OTHER_ROUTE))
            self._metrics.requests.labels(label, str(status[0])).inc()
            self._metrics.seconds.labels(label).observe(time.perf_counter() - started)


class BodyLimit:
    """413 for a body over ``limit`` bytes: at once when ``Content-Length`` says so, else as
    soon as the chunks read pass it. The body is read here whole (it is at most ``limit``)
    and handed to the routes in one piece."""

    def __init__(self, app: Asgi, limit: int) -> None:
        self._app = app
        self._limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._limit:
            await self._refuse(send, f"the body is {int(declared)} bytes")
            return
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = bytes(message.get("body", b""))
            seen += len(chunk)
            if seen > self._limit:
                await self._refuse(send, f"the body is over {self._limit} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        whole: Message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()  # after the body: only a disconnect can come
            delivered = True
            return whole

        await self._app(scope, replay, send)

    async def _refuse(self, send: Send, what: str) -> None:
        refusal = error_response(413, "too_large", f"{what}; at most {self._limit} per request")
        headers = [
            (b"content-type", refusal.content_type.encode()),
            (b"content-length", str(len(refusal.body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": refusal.body})
