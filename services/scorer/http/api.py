"""What the scorer's HTTP side answers: a caller's vectors scored by the model the stream uses.

Served from the scorer's own process (``app.py`` routes to it, ``server.py`` serves it), so an
answer comes from the same ``VectorScorer`` and the same line-up as the stream's predictions of
that moment:

- ``POST /v1/score/{domain}``: one vector (a JSON object) or ``{"vectors": [...]}``; answers
  the prediction record(s) the stream would publish for them. They are answers to the caller:
  not published to Kafka, not deduplicated by event id, and not scored by the shadow.
- the Open Inference Protocol (KServe v2, ``v2.py``): ``/v2/health/ready``,
  ``/v2/models/{domain}`` and ``POST /v2/models/{domain}/infer``, scored by the champion;
- ``GET /healthz``: 200 while the process runs and its loop has not been asked to stop.
- ``GET /readyz``: 200 when a model serves and the consumer owns partitions, else 503.
- ``GET /metrics``: the scorer's Prometheus registry.

Every answer, errors included, is JSON (``/metrics`` excepted); a bad request is a 4xx that
names the field, never a 500. v1 errors are ``{"error": code, "detail": message}``; v2 errors
are the protocol's ``{"error": message}``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import redis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client import Histogram as PromHistogram

from services.core import metrics as names
from services.core.errors import StackError
from services.core.serde import Record
from services.scorer.batch import Scored, VectorScorer
from services.scorer.http.v2 import (
    BINARY_EXTENSION,
    InferenceError,
    champion_only,
    infer_answer,
    model_metadata,
    parse_infer,
    vectors_of,
)
from services.scorer.serving import Lineup
from services.scorer.vectors import InvalidVectorError, VectorSpec

log = logging.getLogger(__name__)

JSON = "application/json"
SCORE_ROUTE = "/v1/score/{domain}"
HEALTH_ROUTE = "/healthz"
READY_ROUTE = "/readyz"
METRICS_ROUTE = "/metrics"
OTHER_ROUTE = "other"
MAX_VECTORS = 1000
MAX_BODY_BYTES = 4 * 1024 * 1024


class ScoringService(Protocol):
    """What the endpoint needs of a running scorer (``services.scorer.service.Scorer``)."""

    @property
    def vectors(self) -> VectorScorer: ...

    @property
    def lineup(self) -> Lineup: ...

    def ready(self) -> bool: ...


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()


def json_response(status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    body = json.dumps(payload, allow_nan=False, separators=(",", ":")).encode()
    return Response(status, body, JSON, headers)


def error_response(
    status: int,
    error: str,
    detail: str,
    *,
    field: str | None = None,
    index: int | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> Response:
    """``{"error": code, "detail": message}``, plus ``field`` and ``index`` when known."""
    payload: dict[str, Any] = {"error": error, "detail": detail}
    if field is not None:
        payload["field"] = field
    if index is not None:
        payload["index"] = index
    return json_response(status, payload, headers)


@dataclass(frozen=True)
class HttpMetrics:
    requests: Counter
    seconds: PromHistogram
    predictions: Counter
    fallbacks: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> HttpMetrics:
        make = names.MetricMaker(registry)
        return cls(
            requests=make.counter(
                names.SCORER_HTTP_REQUESTS,
                "HTTP requests answered, by route and status",
                ["route", "status"],
            ),
            seconds=make.histogram(
                names.SCORER_HTTP_SECONDS,
                "Time to answer an HTTP request",
                ["route"],
                buckets=names.LATENCY_BUCKETS,
            ),
            predictions=make.counter(
                names.SCORER_HTTP_PREDICTIONS,
                "Predictions answered over HTTP (not published)",
                ["domain", "model_version", "served_by"],
            ),
            fallbacks=make.counter(
                names.SCORER_HTTP_FALLBACKS,
                "Vectors answered over HTTP that the heuristic scored",
                ["domain", "cause"],
            ),
        )


class ScoringApi:
    """The routes, without sockets: a method, a target and a body in, a ``Response`` out."""

    def __init__(
        self,
        service: ScoringService,
        spec: VectorSpec,
        registry: CollectorRegistry,
        *,
        alive: Callable[[], bool] = lambda: True,
        max_vectors: int = MAX_VECTORS,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self._service = service
        self._spec = spec
        self._domain = spec.domain
        self._registry = registry
        self._alive = alive
        self.max_vectors = max_vectors
        self.max_body_bytes = max_body_bytes
        self.metrics = HttpMetrics.create(registry)

    def metrics_page(self) -> Response:
        return Response(200, generate_latest(self._registry), CONTENT_TYPE_LATEST)

    def healthz(self) -> Response:
        if not self._alive():
            return json_response(503, {"status": "stopping"})
        return json_response(200, {"status": "ok"})

    def readyz(self) -> Response:
        lineup = self._service.lineup
        if not self._alive():
            return json_response(503, {"status": "stopping", "reason": "the scorer is stopping"})
        if self._service.ready():
            return json_response(200, {"status": "ready", "serving": lineup.describe()})
        if not lineup.champion.is_model:
            reason = "no model is loaded: the heuristic scores (served_by=fallback)"
        else:
            reason = f"the consumer owns no partition of {self._domain.topics.features} yet"
        return json_response(
            503, {"status": "not_ready", "reason": reason, "serving": lineup.describe()}
        )

    def score(self, domain: str, body: bytes) -> Response:
        if domain != self._domain.name:
            return error_response(
                404,
                "unknown_domain",
                f"this scorer serves domain {self._domain.name!r}, not {domain!r}",
            )
        if not self._alive():
            return error_response(503, "stopping", "the scorer is stopping; try another instance")
        try:
            records, many = self.parse(body)
        except InvalidVectorError as exc:
            return error_response(
                400, "invalid_vector", exc.describe(), field=exc.field, index=exc.index
            )
        except _BadBody as exc:
            return error_response(exc.status, exc.code, str(exc))
        try:
            scored = self.predict(records)
        except (redis.RedisError, StackError) as exc:
            log.warning("HTTP scoring: online store unavailable: %s", exc)
            return error_response(503, "unavailable", f"the online store did not answer: {exc}")
        answers = [record for _, record in scored.predictions]
        return json_response(200, {"predictions": answers} if many else answers[0])

    def parse(self, body: bytes) -> tuple[list[Record], bool]:
        """The body's vectors and whether it was a ``{"vectors": [...]}`` batch."""
        try:
            payload = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise _BadBody(400, "invalid_json", f"the body is not UTF-8: {exc}") from None
        except ValueError as exc:  # JSONDecodeError, and integers of over 4,300 digits
            raise _BadBody(400, "invalid_json", f"the body is not JSON: {exc}") from None
        except RecursionError:
            raise _BadBody(400, "invalid_json", "the body's JSON nests too deeply") from None
        if isinstance(payload, dict) and "vectors" in payload:
            vectors = payload["vectors"]
            if len(payload) != 1:
                others = ", ".join(sorted(k for k in payload if k != "vectors"))
                raise _BadBody(400, "invalid_body", f"a batch has only 'vectors', not {others}")
            if not isinstance(vectors, list) or not vectors:
                raise _BadBody(400, "invalid_body", "'vectors' is a non-empty list of objects")
            if len(vectors) > self.max_vectors:
                raise _BadBody(
                    413,
                    "too_many_vectors",
                    f"{len(vectors)} vectors; at most {self.max_vectors} per request",
                )
            records = []
            for i, raw in enumerate(vectors):
                try:
                    records.append(self._spec.parse(raw))
                except InvalidVectorError as exc:
                    raise exc.at(i) from None
            return records, True
        return [self._spec.parse(payload)], False

    def predict(self, records: Sequence[Record]) -> Scored:
        """The stream's scoring of these vectors, by the line-up serving now (no shadow)."""
        keyed = [(self._spec.key_of(record), record) for record in records]
        return self._scored(keyed, replace(self._service.lineup, shadow=None))

    @property
    def spec(self) -> VectorSpec:
        return self._spec

    def v2_server(self, version: str) -> Response:
        """``/v2``: the server's name, version and the protocol extensions it speaks."""
        return json_response(
            200, {"name": "streamml", "version": version, "extensions": [BINARY_EXTENSION]}
        )

    def v2_live(self) -> Response:
        """``/v2/health/live``: 200 while ``/healthz`` is, else 400 (the protocol's 4xx)."""
        if self._alive():
            return json_response(200, {"live": True})
        return json_response(400, {"live": False, "error": "the scorer is stopping"})

    def v2_ready(self) -> Response:
        """``/v2/health/ready``: 200 when ``/readyz`` is, else 400 (the protocol's 4xx)."""
        if self._alive() and self._service.ready():
            return json_response(200, {"ready": True})
        return json_response(400, {"ready": False, "error": "the scorer is not ready"})

    def v2_model(self, name: str) -> Response:
        if name != self._domain.name:
            return self._no_model(name)
        return json_response(200, model_metadata(name, self._service.lineup))

    def v2_model_ready(self, name: str) -> Response:
        if name != self._domain.name:
            return self._no_model(name)
        return self.v2_ready()

    def v2_infer(self, name: str, body: bytes, header_length: str | None) -> Response:
        """``POST /v2/models/{name}/infer``: the rows scored by the champion serving now."""
        if name != self._domain.name:
            return self._no_model(name)
        if not self._alive():
            return json_response(503, {"error": "the scorer is stopping; try another instance"})
        lineup = champion_only(self._service.lineup)
        inputs = lineup.champion.runtime.feature_names
        try:
            request = parse_infer(body, header_length, inputs, self.max_vectors)
        except InferenceError as exc:
            return json_response(exc.status, {"error": str(exc)})
        domain = self._domain
        absent = {n: None for n in self._spec.online if n not in inputs}  # not read: unused
        rows = [{**absent, **row} for row in request.rows]
        keyed = vectors_of(rows, domain.key_field, domain.event_id_field, domain.event_time_field)
        try:
            scored = self._scored(keyed, lineup)
        except (redis.RedisError, StackError) as exc:
            log.warning("v2 inference: online store unavailable: %s", exc)
            return json_response(503, {"error": f"the online store did not answer: {exc}"})
        return json_response(200, infer_answer(name, request, scored))

    def _no_model(self, name: str) -> Response:
        return json_response(
            404, {"error": f"no model {name!r}: this scorer serves {self._domain.name!r}"}
        )

    def _scored(self, keyed: list[tuple[bytes, Record]], lineup: Lineup) -> Scored:
        scored = self._service.vectors.score(keyed, lineup)
        name = self._domain.name
        for _, prediction in scored.predictions:
            self.metrics.predictions.labels(
                name, prediction["model_version"], prediction["served_by"]
            ).inc()
        for cause, count in scored.fallback_causes.items():
            self.metrics.fallbacks.labels(name, cause).inc(count)
        return scored


class _BadBody(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
