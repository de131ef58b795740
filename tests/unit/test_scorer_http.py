"""The scorer's HTTP endpoint: request checking, routing, answers (through the ASGI
application), and the server itself (uvicorn on a socket)."""

from __future__ import annotations

import http.client
import json
import math
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from services.core.declarations import Domain
from services.core.errors import StackError
from services.core.paths import default_schemas_dir
from services.core.schemas import SchemaStore
from services.core.topics import schema_subject
from services.schematools.jsonschema import json_schema_of
from services.scorer.batch import ModelCaller, VectorScorer
from services.scorer.http.api import ScoringApi
from services.scorer.http.app import Asgi, scoring_app
from services.scorer.http.server import ScoringHttpServer
from services.scorer.online import OnlineStoreUnavailable
from services.scorer.serving import Lineup, Serving, canary_bucket, heuristic_serving
from services.scorer.vectors import InvalidVectorError, Kind, VectorSpec

ONLINE = "merchant_txn_count_1h"


def vector(i: int = 0, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": f"e-{i}",
        "card_id": f"card-{i}",
        "merchant_id": "m-1",
        "event_time": 1_767_225_600_000 + i,
        "amount": 12.5 + i,
        "txn_count_5m": 1 + i % 3,
        "txn_count_1h": 2,
        "txn_count_24h": 3,
        "amount_sum_1h": 40.0,
        "amount_mean_24h": 20.0,
        "amount_max_24h": 90.0,
        "seconds_since_last_txn": None if i % 2 else 30.0,
    }
    base.update(changes)
    return base


class LinearRuntime:
    """A stand-in model: a fixed, distinct score function of its inputs."""

    def __init__(self, names: tuple[str, ...], scale: float) -> None:
        self.feature_names = names
        self._scale = scale

    def predict(self, rows: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self._scale * rows.astype(np.float64).sum(axis=1) / 1000))


@dataclass
class FakeService:
    vectors: VectorScorer
    lineup: Lineup
    is_ready: bool = False

    def ready(self) -> bool:
        return self.is_ready


class FakeOnline:
    """Adds the merchant count for known merchants, the declared fill (0) for others (as the
    reader of Redis does); ``fail``: the store cannot be read."""

    feature_names = (ONLINE,)

    def __init__(self, counts: dict[str, int], fail: bool = False) -> None:
        self.counts = counts
        self.fail = fail
        self.asked: list[str] = []

    def enrich(self, vectors: list[dict[str, Any]]) -> None:
        if self.fail:
            raise OnlineStoreUnavailable("the online store could not be read: connection refused")
        for v in vectors:
            if ONLINE not in v:
                self.asked.append(v["merchant_id"])
                v[ONLINE] = self.counts.get(v["merchant_id"], 0)


def make_api(
    payments: Domain,
    spec: VectorSpec,
    lineup: Lineup | None = None,
    online: Any = None,
    **kwargs: Any,
) -> tuple[ScoringApi, FakeService, CollectorRegistry]:
    scorer = VectorScorer(payments, 0.5, online, ModelCaller(0))
    service = FakeService(scorer, lineup or Lineup(heuristic_serving(payments)))
    registry = CollectorRegistry()
    return ScoringApi(service, spec, registry, **kwargs), service, registry


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]


_CLIENTS: dict[int, tuple[ScoringApi, TestClient]] = {}


def app_of(api: ScoringApi) -> Asgi:
    schemas = SchemaStore.from_dir(default_schemas_dir())
    prediction = schemas.current(schema_subject("payments.predictions")).source
    return scoring_app(api, "test", json_schema_of(prediction))


def call(
    api: ScoringApi,
    method: str,
    target: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> Answer:
    """One request through the ASGI application built on ``api`` (built once per api)."""
    held = _CLIENTS.get(id(api))
    if held is None or held[0] is not api:
        held = _CLIENTS[id(api)] = (api, TestClient(app_of(api)))
    response = held[1].request(method, target, content=body, headers=headers)
    return Answer(response.status_code, response.content, dict(response.headers))


def post(api: ScoringApi, body: Any, domain: str = "payments") -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = call(api, "POST", f"/v1/score/{domain}", raw)
    assert response.headers["content-type"] == "application/json"
    return response.status, json.loads(response.body)


def model_lineup(payments: Domain, share: float = 0.0) -> Lineup:
    names = payments.model_inputs
    champion = Serving(LinearRuntime(names, 1.0), payments.model_name, "7", "champion", "onnx")
    canary = Serving(LinearRuntime(names, -1.0), payments.model_name, "8", "canary", "onnx")
    return Lineup(champion, canary if share else None, share)


# --- the vector schema ---


def test_the_spec_is_the_features_schema_plus_the_online_features(spec: VectorSpec) -> None:
    assert spec.required == tuple(vector())
    assert spec.online == (ONLINE,)
    kinds = {f.name: (f.kind, f.nullable) for f in spec.fields}
    assert kinds["event_time"] == (Kind.TIMESTAMP_MS, False)
    assert kinds["seconds_since_last_txn"] == (Kind.DOUBLE, True)
    assert kinds[ONLINE] == (Kind.LONG, True)


def test_a_valid_vector_parses_to_the_records_the_stream_decodes(spec: VectorSpec) -> None:
    record = spec.parse(vector(1, amount=12, txn_count_5m=2.0))
    assert record == {**vector(1), "amount": 12.0, "txn_count_5m": 2}
    assert isinstance(record["amount"], float) and isinstance(record["txn_count_5m"], int)
    assert spec.key_of(record) == b"card-1"


def test_online_features_are_optional_and_null_means_read_the_store(spec: VectorSpec) -> None:
    assert ONLINE not in spec.parse(vector())
    assert ONLINE not in spec.parse({**vector(), ONLINE: None})
    assert spec.parse({**vector(), ONLINE: 4})[ONLINE] == 4


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"amount": "12"}, "amount", "expected a finite number, got a string ('12')"),
        ({"amount": math.nan}, "amount", "got nan"),
        ({"amount": math.inf}, "amount", "got inf"),
        ({"amount": True}, "amount", "got true"),
        ({"amount": 10**400}, "amount", "out of range"),
        ({"amount": None}, "amount", "must not be null"),
        ({"txn_count_5m": 1.5}, "txn_count_5m", "expected an integer, got 1.5"),
        ({"txn_count_5m": False}, "txn_count_5m", "got false"),
        ({"txn_count_5m": 2**63}, "txn_count_5m", "out of range"),
        ({"card_id": 7}, "card_id", "expected a string, got 7"),
        ({"event_time": "2026-01-01"}, "event_time", "epoch milliseconds"),
        ({"seconds_since_last_txn": [1]}, "seconds_since_last_txn", "got a list"),
        ({ONLINE: 2.5}, ONLINE, "expected an integer"),
    ],
)
def test_a_bad_value_is_refused_with_its_field_named(
    spec: VectorSpec, changes: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(InvalidVectorError) as caught:
        spec.parse({**vector(), **changes})
    assert caught.value.field == field
    assert words in str(caught.value)
    assert str(caught.value).startswith(f"{field}: ")


def test_unknown_fields_are_refused_with_the_known_ones_listed(spec: VectorSpec) -> None:
    with pytest.raises(InvalidVectorError) as caught:
        spec.parse({**vector(), "amout": 3.0, "zz": 1})
    assert caught.value.field == "amout"
    assert str(caught.value).startswith("unknown fields: amout, zz (known: event_id, card_id,")
    assert str(caught.value.at(4)).startswith("vectors[4]: unknown fields: amout, zz")


def test_missing_fields_are_all_named(spec: VectorSpec) -> None:
    partial = {k: v for k, v in vector().items() if k not in ("amount", "txn_count_1h")}
    with pytest.raises(InvalidVectorError) as caught:
        spec.parse(partial)
    assert str(caught.value) == "missing required fields: amount, txn_count_1h"
    assert caught.value.field == "amount"
    with pytest.raises(InvalidVectorError, match="missing required field: seconds_since_last_txn"):
        spec.parse({k: v for k, v in vector().items() if k != "seconds_since_last_txn"})


def test_not_strict_ignores_other_fields_and_takes_datetimes(spec: VectorSpec) -> None:
    at = datetime(2026, 1, 1, 0, 0, 1, 250_000, tzinfo=UTC)
    record = spec.parse({**vector(), "note": "x", "event_time": at}, strict=False)
    assert "note" not in record
    assert record["event_time"] == 1_767_225_601_250
    naive = spec.parse({**vector(), "event_time": at.replace(tzinfo=None)}, strict=False)
    assert naive["event_time"] == 1_767_225_601_250


def test_a_vector_that_is_not_an_object_is_refused(spec: VectorSpec) -> None:
    with pytest.raises(InvalidVectorError, match="a vector is a JSON object, not a list"):
        spec.parse([1, 2])


# --- scoring over the API ---


def test_one_vector_gets_the_prediction_record_the_stream_would_publish(
    payments: Domain, spec: VectorSpec
) -> None:
    api, _, _ = make_api(payments, spec)
    status, body = post(api, vector(3))
    assert status == 200
    assert set(body) == {
        "event_id",
        "card_id",
        "model_name",
        "model_version",
        "score",
        "decision",
        "served_by",
        "event_time",
        "predicted_at",
    }
    assert (body["event_id"], body["card_id"], body["event_time"]) == (
        "e-3",
        "card-3",
        vector(3)["event_time"],
    )
    assert (body["model_version"], body["served_by"]) == ("heuristic", "fallback")
    assert body["score"] == pytest.approx(payments.heuristic.score(vector(3)))
    assert body["decision"] == (body["score"] >= 0.5)


def test_several_vectors_are_answered_in_order_and_routed_by_key(
    payments: Domain, spec: VectorSpec
) -> None:
    online = FakeOnline({"m-1": 5})
    api, _, _ = make_api(payments, spec, model_lineup(payments, share=0.5), online)
    vectors = [vector(i) for i in range(40)]
    status, body = post(api, {"vectors": vectors})
    assert status == 200
    predictions = body["predictions"]
    assert [p["event_id"] for p in predictions] == [v["event_id"] for v in vectors]
    runtimes = {"7": LinearRuntime(payments.model_inputs, 1.0)}
    runtimes["8"] = LinearRuntime(payments.model_inputs, -1.0)
    for v, p in zip(vectors, predictions, strict=True):
        in_canary = canary_bucket(v["card_id"].encode()) < 0.5
        assert (p["served_by"], p["model_version"]) == (
            ("canary", "8") if in_canary else ("champion", "7")
        )
        row = np.array([payments.input_row({**v, ONLINE: 5}, payments.model_inputs)], np.float32)
        assert p["score"] == pytest.approx(float(runtimes[p["model_version"]].predict(row)[0]))
    assert {p["served_by"] for p in predictions} == {"champion", "canary"}


def test_online_features_given_are_used_and_an_unknown_merchant_is_scored_by_the_model(
    payments: Domain, spec: VectorSpec
) -> None:
    online = FakeOnline({"m-1": 5})
    api, _, registry = make_api(payments, spec, model_lineup(payments), online)
    given = {**vector(1, merchant_id="m-unknown"), ONLINE: 9}
    unknown = vector(2, merchant_id="m-unknown")
    status, body = post(api, {"vectors": [given, unknown]})
    assert status == 200
    first, second = body["predictions"]
    assert (first["served_by"], second["served_by"]) == ("champion", "champion")
    model = LinearRuntime(payments.model_inputs, 1.0)
    for sent, answer, count in ((given, first, 9), (unknown, second, 0)):
        row = np.array([payments.input_row({**sent, ONLINE: count}, payments.model_inputs)])
        assert answer["score"] == pytest.approx(float(model.predict(row.astype(np.float32))[0]))
    assert online.asked == ["m-unknown"]  # only the vector without the value was looked up
    assert registry.get_sample_value(
        "streamml_scorer_http_fallbacks_total", {"domain": "payments", "cause": "online_store"}
    ) in (None, 0.0)


def test_the_shadow_does_not_score_http_requests(payments: Domain, spec: VectorSpec) -> None:
    class Exploding(LinearRuntime):
        def predict(self, rows: np.ndarray) -> np.ndarray:
            raise AssertionError("the shadow ran")

    lineup = model_lineup(payments)
    shadow = Serving(Exploding(payments.model_inputs, 1), payments.model_name, "9", "shadow")
    api, _, _ = make_api(
        payments, spec, Lineup(lineup.champion, shadow=shadow), FakeOnline({"m-1": 1})
    )
    assert post(api, vector())[0] == 200


@pytest.mark.parametrize(
    ("body", "status", "error", "field", "index"),
    [
        (b"{not json", 400, "invalid_json", None, None),
        (b"\xff\xfe", 400, "invalid_json", None, None),
        (b"[" * 100_000, 400, "invalid_json", None, None),
        (b'{"amount": ' + b"1" * 5000 + b"}", 400, "invalid_json", None, None),
        (b'{"amount": NaN}', 400, "invalid_vector", "event_id", None),
        (json.dumps([vector()]).encode(), 400, "invalid_vector", None, None),
        (json.dumps({"vectors": []}).encode(), 400, "invalid_body", None, None),
        (json.dumps({"vectors": vector()}).encode(), 400, "invalid_body", None, None),
        (json.dumps({"vectors": [vector()], "x": 1}).encode(), 400, "invalid_body", None, None),
        (
            json.dumps({"vectors": [vector(0), vector(1), {**vector(2), "amount": None}]}).encode(),
            400,
            "invalid_vector",
            "amount",
            2,
        ),
        (json.dumps({**vector(), "amount": "1"}).encode(), 400, "invalid_vector", "amount", None),
    ],
)
def test_bad_requests_are_4xx_with_a_json_error(
    payments: Domain,
    spec: VectorSpec,
    body: bytes,
    status: int,
    error: str,
    field: str | None,
    index: int | None,
) -> None:
    api, _, _ = make_api(payments, spec)
    got_status, got = post(api, body)
    assert (got_status, got["error"]) == (status, error), got
    assert got.get("field") == field and got.get("index") == index
    assert got["detail"]


def test_nan_is_refused_naming_the_field(payments: Domain, spec: VectorSpec) -> None:
    api, _, _ = make_api(payments, spec)
    body = json.dumps({**vector(), "amount": math.nan}).encode()  # json writes NaN
    status, got = post(api, body)
    assert (status, got["field"]) == (400, "amount")
    assert got["detail"] == "amount: expected a finite number, got nan"


def test_too_many_vectors_is_413(payments: Domain, spec: VectorSpec) -> None:
    api, _, _ = make_api(payments, spec, max_vectors=3)
    status, got = post(api, {"vectors": [vector(i) for i in range(4)]})
    assert (status, got["error"]) == (413, "too_many_vectors")


def test_routes_methods_and_domains(payments: Domain, spec: VectorSpec) -> None:
    api, _, _ = make_api(payments, spec)
    status, got = post(api, vector(), domain="rides")
    assert (status, got["error"]) == (404, "unknown_domain")
    assert "'payments'" in got["detail"]
    for method, target, want in [
        ("GET", "/", 404),
        ("GET", "/v1/score", 404),
        ("GET", "/v1/score/payments", 405),
        ("POST", "/healthz", 405),
        ("DELETE", "/metrics", 405),
    ]:
        response = call(api, method, target, b"")
        assert response.status == want, (method, target)
        assert json.loads(response.body)["error"] in ("not_found", "method_not_allowed")
    assert call(api, "GET", "/v1/score/payments", b"").headers["allow"] == "POST"
    assert call(api, "GET", "/healthz?verbose=1", b"").status == 200


def test_health_and_readiness(payments: Domain, spec: VectorSpec) -> None:
    alive = [True]
    api, service, _ = make_api(payments, spec, alive=lambda: alive[0])
    assert call(api, "GET", "/healthz", b"").status == 200
    response = call(api, "GET", "/readyz", b"")
    assert response.status == 503
    assert "no model is loaded" in json.loads(response.body)["reason"]
    service.lineup = model_lineup(payments)
    assert "owns no partition" in json.loads(call(api, "GET", "/readyz", b"").body)["reason"]
    service.is_ready = True
    ready = call(api, "GET", "/readyz", b"")
    assert (ready.status, json.loads(ready.body)["status"]) == (200, "ready")
    alive[0] = False
    assert call(api, "GET", "/healthz", b"").status == 503
    assert call(api, "GET", "/readyz", b"").status == 503
    status, got = post(api, vector())
    assert (status, got["error"]) == (503, "stopping")


def test_an_unreachable_online_store_is_503(payments: Domain, spec: VectorSpec) -> None:
    api, _, _ = make_api(payments, spec, model_lineup(payments), FakeOnline({}, fail=True))
    status, got = post(api, vector())
    assert (status, got["error"]) == (503, "unavailable")


def test_metrics_count_requests_by_route_and_status(payments: Domain, spec: VectorSpec) -> None:
    api, _, registry = make_api(payments, spec)
    post(api, vector())
    post(api, b"{")
    call(api, "GET", "/nowhere/at/all", b"")
    text = call(api, "GET", "/metrics", b"").body.decode()
    assert (
        'streamml_scorer_http_requests_total{route="/v1/score/{domain}",status="200"} 1.0' in text
    )
    assert (
        'streamml_scorer_http_requests_total{route="/v1/score/{domain}",status="400"} 1.0' in text
    )
    assert 'streamml_scorer_http_requests_total{route="other",status="404"} 1.0' in text
    served = {"domain": "payments", "model_version": "heuristic", "served_by": "fallback"}
    assert registry.get_sample_value("streamml_scorer_http_predictions_total", served) == 1.0


# --- the server on a socket ---


@pytest.fixture
def server(payments: Domain, spec: VectorSpec) -> Any:
    api, _, _ = make_api(payments, spec, max_body_bytes=10_000)
    running = ScoringHttpServer(app_of(api), "127.0.0.1", 0).start()
    yield running
    running.close()


def test_a_port_in_use_is_a_clear_error(
    server: ScoringHttpServer, payments: Domain, spec: VectorSpec
) -> None:
    api, _, _ = make_api(payments, spec)
    with pytest.raises(StackError, match=f"cannot serve HTTP on 127.0.0.1:{server.port}"):
        ScoringHttpServer(app_of(api), "127.0.0.1", server.port)


def test_the_server_answers_over_one_kept_alive_connection(server: ScoringHttpServer) -> None:
    assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}"
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        connection.request("POST", "/v1/score/payments", json.dumps(vector()).encode())
        first = connection.getresponse()
        assert first.status == 200 and json.loads(first.read())["served_by"] == "fallback"
        connection.request("POST", "/v1/score/payments", b'{"amount": 1}')
        second = connection.getresponse()
        assert second.status == 400 and json.loads(second.read())["field"] == "event_id"
        connection.request("GET", "/metrics")
        metrics = connection.getresponse()
        assert metrics.status == 200
        assert metrics.getheader("Content-Type", "").startswith("text/plain")
        assert b"streamml_scorer_http_requests_total" in metrics.read()
    finally:
        connection.close()


def test_the_server_refuses_oversized_bodies_in_json_declared_or_chunked(
    server: ScoringHttpServer,
) -> None:
    def raw(request: bytes) -> tuple[int, dict[str, Any]]:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(request)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split()[1]), json.loads(body)

    status, got = raw(b"POST /v1/score/payments HTTP/1.1\r\nContent-Length: 20000\r\n\r\n")
    assert (status, got["error"]) == (413, "too_large")
    chunked = b"POST /v1/score/payments HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"x" * 6_000
    status, got = raw(chunked + (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 2 + b"0\r\n\r\n")
    assert (status, got["error"]) == (413, "too_large")  # counted as the chunks come
    status, got = raw(b"POST /v1/score/payments HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (status, got["error"]) == (400, "invalid_json")  # no body: an empty one
