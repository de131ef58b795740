"""Three ways to call the serving model agree: the stream, the scorer's HTTP endpoint, and
``streamml score-batch``, on the real broker and Redis, champion and canary alike.

The same vectors go through all three: published to ``payments.features`` (predictions read
back read_committed), POSTed to the running scorer, and written to a parquet file scored by a
``score-batch`` subprocess. Merchants' online rows are written by Feast itself; some vectors
name a merchant with no row or a stale one, so the declared fill is compared too.
"""

from __future__ import annotations

import http.client
import json
import math
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from services.core.domains import load_domain
from services.core.schemas import SchemaStore
from services.core.serde import CodecFactory
from services.core.settings import StackSettings
from services.featurestore.feast_objects import feature_view_name
from services.featurestore.store import apply_declarations, open_store
from services.models.runtimes import OnnxModel
from services.registry.artifacts import ModelStore
from services.registry.stages import promote, stage_trial
from services.registry.versions import CANARY
from services.scorer.serving import canary_bucket
from services.stack.processes import free_port
from services.stack.services import ServiceProcess, service_env
from services.trainer.publish import train_and_register
from tests.integration.helpers import TopicReader
from tests.integration.helpers import publish as publish_records
from tests.outside import OutsideCodec

pytestmark = pytest.mark.integration

FEATURES = OutsideCodec("payments.features.avsc")
PREDICTIONS = OutsideCodec("payments.predictions.avsc")
CANARY_SHARE = 0.3
HOUR_MS = 3_600_000
ONLINE = "merchant_txn_count_1h"
COMPARED = ("event_id", "card_id", "model_name", "model_version", "score", "decision")
COMPARED += ("served_by", "event_time")
SCHEMATHESIS_CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)


class Paths:
    """Two trained versions (champion and canary), merchants' rows, and a running scorer."""

    def __init__(self, stack: StackSettings, logs_dir: Path, work: Path) -> None:
        self.stack = stack
        self.work = work
        self.domain = load_domain(stack.features_dir, "payments")
        self.codecs = CodecFactory(SchemaStore.from_dir(stack.schemas_dir))
        self.prefix = uuid.uuid4().hex[:8]
        self.champion, self.canary = (
            train_and_register(stack, self.domain, seed=seed, events=3000) for seed in (31, 32)
        )
        name = self.domain.model_name
        promote(stack, self.codecs, name, self.champion)
        stage_trial(stack, self.codecs, name, self.canary, CANARY, CANARY_SHARE)
        apply_declarations(stack, [self.domain])
        self.now = int(time.time() * 1000)
        self.merchants = {f"paths-m-{self.prefix}-{i}": 2 + i for i in range(4)}
        self.stale = f"paths-stale-{self.prefix}"
        self.unknown = f"paths-unknown-{self.prefix}"
        ttl_ms = int(self.domain.feature_ttl.total_seconds() * 1000)
        self.write_merchants(self.merchants, self.now - 60_000)
        self.write_merchants({self.stale: 6}, self.now - ttl_ms - HOUR_MS)
        self.port = free_port()
        self.metrics_port = free_port()
        env = service_env(
            stack,
            {
                "STREAMML_HTTP_PORT": str(self.port),
                "STREAMML_METRICS_PORT": str(self.metrics_port),
                "STREAMML_SCORER_APP_ID": f"paths-{self.prefix}",
            },
        )
        self.scorer = ServiceProcess("scorer", env, logs_dir / "scorer-paths.log")

    def write_merchants(self, counts: dict[str, int], at_ms: int) -> None:
        frame = pd.DataFrame(
            [
                {
                    "merchant_id": merchant,
                    "event_time": pd.Timestamp(at_ms, unit="ms", tz="UTC"),
                    ONLINE: count,
                }
                for merchant, count in counts.items()
            ]
        )
        open_store(self.stack).write_to_online_store(
            feature_view_name(self.domain, "merchant"), frame
        )

    def vectors(self) -> list[dict[str, Any]]:
        known = list(self.merchants)
        merchants = known * 40 + [self.unknown] * 12 + [self.stale] * 12
        return [
            {
                "event_id": f"paths-{self.prefix}-{i}",
                "card_id": f"paths-card-{self.prefix}-{i % 90}",
                "merchant_id": merchant,
                "event_time": self.now + i,
                "amount": 5.0 + (i % 23) * 17.25,
                "txn_count_5m": i % 4,
                "txn_count_1h": 1 + i % 6,
                "txn_count_24h": 2 + i % 9,
                "amount_sum_1h": 30.0 + i % 13,
                "amount_mean_24h": 15.0 + i % 7,
                "amount_max_24h": 80.0 + i % 29,
                "seconds_since_last_txn": None if i % 8 == 0 else 12.5 + i,
            }
            for i, merchant in enumerate(merchants)
        ]

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            data = (
                None
                if body is None
                else (body if isinstance(body, bytes) else json.dumps(body).encode())
            )
            connection.request(method, path, data, {"Content-Type": "application/json"})
            response = connection.getresponse()
            raw = response.read()
            content_type = response.getheader("Content-Type", "")
            return response.status, json.loads(raw) if "json" in content_type else raw.decode()
        finally:
            connection.close()

    def wait_ready(self, timeout_s: float = 90) -> dict[str, Any]:
        """Until /readyz is 200 and serves both versions."""
        want = f"champion {self.champion}, canary {self.canary} on 30% of keys"
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            assert self.scorer.process.poll() is None, self.scorer.log_path.read_text()[-3000:]
            try:
                status, last = self.call("GET", "/readyz")
            except OSError as exc:
                last = exc
            else:
                if status == 200 and last["serving"].startswith(want):
                    assert isinstance(last, dict)
                    return last
            time.sleep(0.2)
        raise AssertionError(f"the scorer was not ready in {timeout_s} s: {last}")

    def expected(
        self, versions: list[str], vectors: list[dict[str, Any]]
    ) -> dict[str, list[float]]:
        """What each registered artifact gives for these vectors and the merchants' rows."""
        store = ModelStore(self.stack.models_dir)
        expected = {}
        for version in versions:
            # The model card names the artifact and its sha256, as the registry record does;
            # reading it spares a registry read (about 10 s on the embedded broker).
            card = store.card(self.domain.model_name, version)
            artifact = store.load_verified(card["artifact_uri"], card["sha256"])
            names = tuple(card["feature_names"])
            rows = [
                self.domain.input_row({**v, ONLINE: self.merchants.get(v["merchant_id"], 0)}, names)
                for v in vectors
            ]
            model = OnnxModel(artifact, names, 1)
            expected[version] = model.predict(np.array(rows, dtype=np.float32)).tolist()
        return expected


@pytest.fixture(scope="module")
def paths(
    stack: StackSettings, logs_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Paths]:
    made = Paths(stack, logs_dir, tmp_path_factory.mktemp("paths"))
    yield made
    if made.scorer.process.poll() is None:
        made.scorer.stop()


class Predictions:
    """The predictions topic read as an outside read_committed consumer, kept open so a later
    look sees anything published since."""

    def __init__(self, paths: Paths, vectors: list[dict[str, Any]]) -> None:
        self._reader: TopicReader | None = TopicReader(paths.stack, paths.domain.topics.predictions)
        self._wanted = {str(v["event_id"]) for v in vectors}
        self._decoded = 0
        self.found: dict[str, list[dict[str, Any]]] = {}

    def _collect(self, values: list[bytes]) -> bool:
        for value in values[self._decoded :]:
            record = PREDICTIONS.decode(value)
            if record["event_id"] in self._wanted:
                self.found.setdefault(record["event_id"], []).append(record)
        self._decoded = len(values)
        return self._wanted <= self.found.keys()

    def read(self, timeout_s: float = 90) -> dict[str, int]:
        """Reads until every event has a prediction, then 1.5 s more so that a second
        prediction of any would show; returns the number of predictions per event."""
        assert self._reader is not None
        self._reader.read_until(self._collect, timeout_s)
        self._collect(self._reader.settle(1.5))
        return {k: len(v) for k, v in self.found.items()}

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def epoch_ms(value: Any) -> int:
    """A timestamp as the Avro record carries it, from whatever a reader made of it."""
    if isinstance(value, datetime):
        return round(value.timestamp() * 1000)
    return int(value)


def score_batch(paths: Paths, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "score-batch", "payments", *args],
        env=service_env(paths.stack),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_stream_http_and_batch_give_the_same_predictions(
    paths: Paths, request: pytest.FixtureRequest
) -> None:
    ready = paths.wait_ready()
    assert ready["status"] == "ready"
    assert paths.call("GET", "/healthz") == (200, {"status": "ok"})
    vectors = paths.vectors()

    # 1. The stream.
    publish_records(
        paths.stack,
        paths.domain.topics.features,
        [(str(v["card_id"]).encode(), FEATURES.encode(v)) for v in vectors],
    )
    topic = Predictions(paths, vectors)
    request.addfinalizer(topic.close)
    once = {str(v["event_id"]): 1 for v in vectors}
    assert topic.read() == once
    stream = {
        k: {**v[0], "event_time": epoch_ms(v[0]["event_time"])} for k, v in topic.found.items()
    }

    # 2. HTTP: all at once, and a few one by one (already predicted: no dedup over HTTP).
    status, body = paths.call("POST", "/v1/score/payments", {"vectors": vectors})
    assert status == 200, body
    over_http = {p["event_id"]: p for p in body["predictions"]}
    assert [p["event_id"] for p in body["predictions"]] == [v["event_id"] for v in vectors]
    for vector in (vectors[0], vectors[-1], vectors[-20]):
        status, single = paths.call("POST", "/v1/score/payments", vector)
        assert status == 200, single
        assert {k: single[k] for k in COMPARED} == {
            k: over_http[vector["event_id"]][k] for k in COMPARED
        }

    # 3. score-batch on a parquet file of the same vectors.
    source = paths.work / "vectors.parquet"
    output = paths.work / "scored.parquet"
    frame = pd.DataFrame(vectors)
    frame["note"] = [f"row-{i}" for i in range(len(vectors))]
    frame.to_parquet(source, index=False)
    done = score_batch(paths, "--input", str(source), "--output", str(output), "--chunk-rows", "50")
    assert done.returncode == 0, done.stderr
    assert f"{len(vectors)}/{len(vectors)} rows (100%)" in done.stderr
    assert f"canary {paths.canary} on 30% of keys" in done.stderr
    scored = pd.read_parquet(output)
    assert list(scored["note"]) == list(frame["note"])
    batch = {
        row["event_id"]: {**row, "event_time": epoch_ms(row["event_time"])}
        for row in scored.to_dict("records")
    }

    # The three agree on every vector, exactly.
    for vector in vectors:
        event = vector["event_id"]
        want = {k: stream[event][k] for k in COMPARED}
        assert {k: over_http[event][k] for k in COMPARED} == want, event
        assert {k: batch[event][k] for k in COMPARED} == want, event

    # ... and are what the registered artifacts and the heuristic give.
    expected = paths.expected([paths.champion, paths.canary], vectors)
    kinds = {"champion": 0, "canary": 0, "fallback": 0}
    for i, vector in enumerate(vectors):
        prediction = stream[vector["event_id"]]
        kinds[prediction["served_by"]] += 1
        in_canary = canary_bucket(str(vector["card_id"]).encode()) < CANARY_SHARE
        assert prediction["served_by"] == ("canary" if in_canary else "champion")
        assert prediction["model_version"] == (paths.canary if in_canary else paths.champion)
        assert prediction["score"] == pytest.approx(expected[prediction["model_version"]][i])
    # An unknown merchant and one with a row older than the window are scored with the count's
    # declared fill (0), by the model.
    assert kinds["fallback"] == 0 and kinds["champion"] > 0 and kinds["canary"] > 0, kinds

    # 4. The Open Inference Protocol, driven by Triton's own HTTP client: the champion's
    # scores, those of the stream and /v1/score for the vectors it routes to the champion.
    by_triton = triton_scores(paths, vectors)
    for i, vector in enumerate(vectors):
        event = vector["event_id"]
        assert by_triton[i] == pytest.approx(expected[paths.champion][i], rel=1e-6), event
        if stream[event]["served_by"] == "champion":
            assert by_triton[i] == stream[event]["score"] == over_http[event]["score"], event

    # HTTP answers are not published: still exactly one prediction per event on the topic.
    assert topic.read() == once

    # STREAMML_HTTP_PORT moved the API; the metrics port still serves /metrics alone.
    log = paths.scorer.log_path.read_text()
    assert f"scorer HTTP listening on http://127.0.0.1:{paths.port}: " in log
    with urllib.request.urlopen(f"http://127.0.0.1:{paths.metrics_port}/metrics") as page:
        assert b"streamml_scorer_predictions_total" in page.read()
    status, metrics = paths.call("GET", "/metrics")
    assert status == 200
    for name in (
        "streamml_scorer_predictions_total",
        "streamml_scorer_batch_size",
        "streamml_scorer_model_loads_total",
        "streamml_scorer_fallbacks_total",
        'streamml_scorer_http_requests_total{route="/v1/score/{domain}",status="200"} 4.0',
        "streamml_scorer_http_predictions_total",
    ):
        assert name in metrics, name


def triton_scores(paths: Paths, vectors: list[dict[str, Any]]) -> list[float]:
    """The vectors scored over KServe v2 by ``tritonclient.http``, as its users call it:
    metadata first, one binary FP32 tensor per input the model names."""
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=f"127.0.0.1:{paths.port}")
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("payments")
        meta = client.get_model_metadata("payments")
        assert meta["versions"] == [paths.champion]
        names = [tensor["name"] for tensor in meta["inputs"]]
        rows = np.array(
            [
                paths.domain.input_row(
                    {**v, ONLINE: paths.merchants.get(v["merchant_id"], 0)}, names
                )
                for v in vectors
            ],
            dtype=np.float32,
        )
        inputs = []
        for j, name in enumerate(names):
            tensor = triton.InferInput(name, [len(vectors), 1], "FP32")
            tensor.set_data_from_numpy(rows[:, j : j + 1])
            inputs.append(tensor)
        wanted = [triton.InferRequestedOutput("score"), triton.InferRequestedOutput("decision")]
        result = client.infer("payments", inputs, outputs=wanted, request_id="paths")
        answer = result.get_response()
        assert (answer["model_version"], answer["id"]) == (paths.champion, "paths")
        scores = result.as_numpy("score")
        decisions = result.as_numpy("decision")
        assert scores is not None and decisions is not None
        assert scores.shape == decisions.shape == (len(vectors), 1)
        assert (decisions[:, 0] == (scores[:, 0] >= 0.5)).all()
        return [float(score) for score in scores[:, 0]]
    finally:
        client.close()


def test_the_openapi_document_holds_against_the_running_scorer(paths: Paths) -> None:
    """schemathesis generates requests from GET /openapi.json: no answer is a server error,
    and each one's status, content type and body are those the document gives."""
    paths.wait_ready()
    status, document = paths.call("GET", "/openapi.json")
    assert status == 200 and document["openapi"].startswith("3.1")
    assert {"/v1/score/{domain}", "/v2/models/{model}/infer"} <= set(document["paths"])
    run = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"http://127.0.0.1:{paths.port}/openapi.json",
            "--checks",
            ",".join(SCHEMATHESIS_CHECKS),
            "--max-examples",
            "40",
            "--seed",
            "7",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=paths.work,  # schemathesis keeps a cache folder where it runs
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    operations = sum(len(methods) for methods in document["paths"].values())
    assert f"Tested: {operations}" in run.stdout, run.stdout[-3000:]
    cases = re.search(r"Test cases:\s+(\d+) generated, (\d+) passed", run.stdout)
    assert cases and int(cases.group(1)) == int(cases.group(2)) > 100, run.stdout[-3000:]
    assert paths.scorer.process.poll() is None


def test_bad_requests_get_json_errors(paths: Paths) -> None:
    paths.wait_ready()
    good = paths.vectors()[0]
    status, body = paths.call("POST", "/v1/score/rides", good)
    assert (status, body["error"]) == (404, "unknown_domain")
    status, body = paths.call("GET", "/v2/anything")
    assert (status, body["error"]) == (404, "not_found")
    status, body = paths.call("POST", "/v1/score/payments", b"{oops")
    assert (status, body["error"]) == (400, "invalid_json")
    missing = {k: v for k, v in good.items() if k != "amount"}
    status, body = paths.call("POST", "/v1/score/payments", missing)
    assert (status, body["field"]) == (400, "amount"), body
    nan = json.dumps({**good, "amount": math.nan}).encode()
    status, body = paths.call("POST", "/v1/score/payments", nan)
    assert (status, body["field"], body["detail"]) == (
        400,
        "amount",
        "amount: expected a finite number, got nan",
    )
    status, body = paths.call(
        "POST", "/v1/score/payments", {"vectors": [good, {**good, "card_id": 3}]}
    )
    assert (status, body["field"], body["index"]) == (400, "card_id", 1)
    status, body = paths.call("GET", "/v1/score/payments")
    assert (status, body["error"]) == (405, "method_not_allowed")
    assert paths.scorer.process.poll() is None  # none of it hurt the scorer


def test_score_batch_errors_are_clear(paths: Paths) -> None:
    done = score_batch(
        paths, "--input", str(paths.work / "absent.parquet"), "--output", "x.parquet"
    )
    assert done.returncode == 2
    assert "input file" in done.stderr and "does not exist" in done.stderr
    partial = paths.work / "partial.parquet"
    pd.DataFrame(paths.vectors()[:3]).drop(columns=["amount", "txn_count_5m"]).to_parquet(partial)
    done = score_batch(
        paths, "--input", str(partial), "--output", str(paths.work / "p-out.parquet")
    )
    assert done.returncode == 2
    assert "lacks the columns amount, txn_count_5m" in done.stderr, done.stderr
    assert not (paths.work / "p-out.parquet").exists()


def test_the_scorer_stops_cleanly_with_its_http_server(paths: Paths) -> None:
    paths.wait_ready()
    assert paths.scorer.stop() == 0
    with pytest.raises(OSError):
        paths.call("GET", "/healthz")
