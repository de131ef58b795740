"""The monitor's join on a real broker: every event with a prediction and an outcome goes out
once on payments.labelled, with the vector and the prediction as they were published, whatever
arrived first, also across a kill -9 of the monitor; bad outcomes go to the DLQ."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from services.core.errors import SerializationError
from services.core.schemas import SchemaStore
from services.core.serde import Codec, CodecFactory
from services.core.settings import StackSettings
from services.monitor.quality import AUC_BINS, Pair, figures_of
from services.producer.synthetic import PaymentsGenerator
from services.stack.processes import free_port
from services.stack.services import ServiceProcess, service_env
from tests.integration.helpers import TopicReader, publish

pytestmark = pytest.mark.integration

FEATURES = "payments.features"
PREDICTIONS = "payments.predictions"
OUTCOMES = "payments.outcomes"
LABELLED = "payments.labelled"
OUTCOMES_DLQ = "payments.outcomes.dlq"
EVENTS = 3000
OUTCOME_FIRST = 300  # their outcomes are published before their predictions and vectors
WITHOUT_OUTCOME = 200
ORPHAN_OUTCOMES = 100
REPEATED_OUTCOMES = 150


def events(prefix: str, rng: random.Random) -> list[dict[str, Any]]:
    """Events whose predictions come from two model versions named after the run."""
    now = int(time.time() * 1000)
    made = []
    for i in range(EVENTS):
        card = f"monitor-card-{prefix}-{rng.randrange(200)}"
        event_time = now - 600_000 + i * 100
        score = rng.random()
        made.append(
            {
                "vector": {
                    "event_id": f"{prefix}-{i}",
                    "card_id": card,
                    "merchant_id": f"monitor-m-{rng.randrange(20)}",
                    "event_time": event_time,
                    "amount": round(rng.uniform(1, 400), 2),
                    "txn_count_5m": rng.randrange(1, 5),
                    "txn_count_1h": rng.randrange(5, 20),
                    "txn_count_24h": rng.randrange(20, 80),
                    "amount_sum_1h": round(rng.uniform(10, 2000), 2),
                    "amount_mean_24h": round(rng.uniform(1, 400), 2),
                    "amount_max_24h": round(rng.uniform(400, 900), 2),
                    "seconds_since_last_txn": rng.choice((None, rng.uniform(1, 3600))),
                },
                "prediction": {
                    "event_id": f"{prefix}-{i}",
                    "card_id": card,
                    "model_name": "payments-fraud",
                    "model_version": rng.choice((f"{prefix}-a", f"{prefix}-b")),
                    "score": score,
                    "decision": score >= 0.5,
                    "served_by": rng.choice(("champion", "canary")),
                    "event_time": event_time,
                    "predicted_at": event_time + 20,
                    # What the scorer read from the online store (none: it had no row).
                    "online_features": None if i % 7 == 0 else {"merchant_txn_count_1h": i % 30},
                },
                "outcome": {
                    "event_id": f"{prefix}-{i}",
                    "is_fraud": rng.random() < 0.3,
                    "observed_at": event_time + 60_000,
                },
            }
        )
    return made


def labelled_of(values: list[bytes], codec: Codec, prefix: str) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for value in values:
        try:
            record = codec.decode(value)
        except SerializationError:
            continue
        if str(record["event_id"]).startswith(f"{prefix}-"):
            found.setdefault(str(record["event_id"]), []).append(record)
    return found


def test_each_answered_prediction_is_labelled_once_across_a_kill(
    stack: StackSettings, logs_dir: Path
) -> None:
    codecs = CodecFactory(SchemaStore.from_dir(stack.schemas_dir))
    encode = {t: codecs.for_topic(t).encode for t in (FEATURES, PREDICTIONS, OUTCOMES)}
    labelled_codec = codecs.for_topic(LABELLED)
    prefix = uuid.uuid4().hex[:8]
    rng = random.Random(15)
    made = events(prefix, rng)
    answered = made[: EVENTS - WITHOUT_OUTCOME]
    repeated = rng.sample(answered, REPEATED_OUTCOMES)
    orphans = [
        {"event_id": f"{prefix}-orphan-{i}", "is_fraud": False, "observed_at": 1}
        for i in range(ORPHAN_OUTCOMES)
    ]

    def publish_parts(batch: list[dict[str, Any]], kinds: tuple[str, ...]) -> None:
        topics = {"vector": FEATURES, "prediction": PREDICTIONS}
        for kind in kinds:
            publish(
                stack,
                topics[kind],
                [(e[kind]["card_id"].encode(), encode[topics[kind]](e[kind])) for e in batch],
            )

    def publish_outcomes(outcomes: list[dict[str, Any]]) -> None:
        publish(stack, OUTCOMES, [(None, encode[OUTCOMES](o)) for o in outcomes])

    env = service_env(
        stack,
        {
            "STREAMML_MONITOR_INSTANCE": f"monitor-{prefix}",
            "STREAMML_MONITOR_SNAPSHOT_EVERY_S": "1",
        },
    )
    reader = TopicReader(stack, LABELLED)
    alerts = TopicReader(stack, "ml.alerts")
    first = ServiceProcess("monitor", env, logs_dir / "monitor-killed.log", "--domain", "payments")
    try:
        publish_outcomes([e["outcome"] for e in answered[:OUTCOME_FIRST]])
        publish_parts(made[: EVENTS // 2], ("vector", "prediction"))
        publish_outcomes([e["outcome"] for e in answered[OUTCOME_FIRST : EVENTS // 2]])
        reader.read_until(lambda v: len(labelled_of(v, labelled_codec, prefix)) >= 500, 120)
        first.kill()  # SIGKILL: no flush, no commit
    finally:
        if first.process.poll() is None:
            first.kill()
    before = len(labelled_of(reader.values, labelled_codec, prefix))
    assert 500 <= before < len(answered), "the kill did not land mid-stream"

    second = ServiceProcess(
        "monitor", env, logs_dir / "monitor-restarted.log", "--domain", "payments"
    )
    try:
        # The vectors of the second half before their predictions, the other way round above.
        publish_parts(made[EVENTS // 2 :], ("prediction",))
        publish_outcomes([e["outcome"] for e in answered[EVENTS // 2 :]])
        publish_parts(made[EVENTS // 2 :], ("vector",))
        publish_outcomes([e["outcome"] for e in repeated] + orphans)
        reader.read_until(
            lambda v: len(labelled_of(v, labelled_codec, prefix)) >= len(answered), 120
        )
        reader.settle(3.0)
        assert second.process.poll() is None, "the monitor stopped"
        reported = report_when(
            stack, lambda r: sum(v["joined"] for v in ours(r, prefix)) == len(answered)
        )
        plot = logs_dir / f"monitor-{prefix}.png"
        text = subprocess.run(
            [
                sys.executable,
                "-m",
                "services.cli",
                "monitor",
                "report",
                "payments",
                "--plot",
                str(plot),
            ],
            env=service_env(stack),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert text.returncode == 0, text.stderr
        assert f"{prefix}-a" in text.stdout and "amount<50" in text.stdout
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        assert second.stop() == 0
        reader.close()

    # Random scores rank no better than chance: each version's window AUC falls below the
    # declared floor (0.6), and each (version, served_by) raises one quality alert.
    alerts_codec = codecs.for_topic("ml.alerts")
    expected = {(f"{prefix}-{v}", b) for v in "ab" for b in ("champion", "canary")}

    def quality_alerts(values: list[bytes]) -> list[dict[str, Any]]:
        return [
            a
            for a in _decoded(values, alerts_codec)
            if a["kind"] == "quality" and a["model_version"].startswith(f"{prefix}-")
        ]

    alerts.read_until(lambda v: len(quality_alerts(v)) >= len(expected), 30)
    alerts.settle(2.0)
    alerts.close()
    raised = quality_alerts(alerts.values)
    assert sorted((a["model_version"], a["served_by"]) for a in raised) == sorted(expected)
    assert all(a["subject"] == "auc" and a["value"] < a["threshold"] == 0.6 for a in raised)

    found = labelled_of(reader.values, labelled_codec, prefix)
    twice = sorted(event_id for event_id, records in found.items() if len(records) > 1)
    assert not twice, f"{len(twice)} events labelled more than once, e.g. {twice[:3]}"
    by_id = {e["prediction"]["event_id"]: e for e in made}
    assert set(found) == {e["prediction"]["event_id"] for e in answered}
    for event_id, (record,) in found.items():
        expected = by_id[event_id]
        assert record["prediction"] == expected["prediction"]
        assert record["features"] == expected["vector"]
        assert record["outcome"] == expected["outcome"]
        assert record["label"] == expected["outcome"]["is_fraud"]
        assert record["card_id"] == expected["prediction"]["card_id"]
        assert record["event_time"] == expected["prediction"]["event_time"]

    # The figures the monitor published equal a recomputation on the same pairs, kill or not.
    for version in ours(reported, prefix):
        name = version["model_version"]
        pairs = [
            Pair(
                e["prediction"]["score"],
                e["prediction"]["decision"],
                e["outcome"]["is_fraud"],
                e["outcome"]["observed_at"] - e["prediction"]["event_time"],
            )
            for e in answered
            if e["prediction"]["model_version"] == name
            and e["prediction"]["served_by"] == version["served_by"]
        ]
        expected_figures = figures_of(pairs)
        assert version["joined"] == expected_figures.joined == len(pairs)
        assert version["accuracy"] == pytest.approx(expected_figures.accuracy, abs=1e-12)
        assert version["auc"] == pytest.approx(expected_figures.auc, abs=1 / AUC_BINS)
        assert version["logloss"] == pytest.approx(expected_figures.logloss, rel=1e-9)
        assert version["precision"] == pytest.approx(expected_figures.precision, abs=1e-12)
        assert version["recall"] == pytest.approx(expected_figures.recall, abs=1e-12)
        predicted = sum(
            1
            for e in made
            if e["prediction"]["model_version"] == name
            and e["prediction"]["served_by"] == version["served_by"]
        )
        assert version["coverage"] == pytest.approx(len(pairs) / predicted)
    assert len(ours(reported, prefix)) == 4  # two versions, each as champion and canary


def test_bad_outcomes_go_to_the_dlq_and_the_monitor_keeps_joining(
    stack: StackSettings, logs_dir: Path
) -> None:
    codecs = CodecFactory(SchemaStore.from_dir(stack.schemas_dir))
    outcomes_codec = codecs.for_topic(OUTCOMES)
    dlq_codec, labelled_codec = codecs.for_topic(OUTCOMES_DLQ), codecs.for_topic(LABELLED)
    prefix = uuid.uuid4().hex[:8]
    good = events(prefix, random.Random(16))[:20]
    bad: list[tuple[bytes | None, bytes | None]] = [
        (b"k1", b"not avro at all"),
        (b"k2", b"\xc3\x01" + b"\x00" * 8 + b"\x02"),  # single-object, unknown fingerprint
        (b"k3", outcomes_codec.encode({"event_id": "", "is_fraud": True, "observed_at": 1})),
        (b"k4", None),
    ]
    env = service_env(stack, {"STREAMML_MONITOR_INSTANCE": f"monitor-dlq-{prefix}"})
    letters, labelled = TopicReader(stack, OUTCOMES_DLQ), TopicReader(stack, LABELLED)
    monitor = ServiceProcess("monitor", env, logs_dir / "monitor-dlq.log", "--domain", "payments")
    try:
        positions = publish(stack, OUTCOMES, bad)
        for topic, kind in ((FEATURES, "vector"), (PREDICTIONS, "prediction")):
            codec = codecs.for_topic(topic)
            publish(
                stack, topic, [(e[kind]["card_id"].encode(), codec.encode(e[kind])) for e in good]
            )
        publish(stack, OUTCOMES, [(None, outcomes_codec.encode(e["outcome"])) for e in good])
        labelled.read_until(lambda v: len(labelled_of(v, labelled_codec, prefix)) == len(good), 120)
        wanted = {(OUTCOMES, p, o) for p, o in positions}
        letters.read_until(lambda v: wanted <= _sources(v, dlq_codec), 60)
        assert monitor.process.poll() is None, "a bad outcome stopped the monitor"
    finally:
        assert monitor.stop() == 0
        letters.close()
        labelled.close()
    reasons = {
        (r["source_partition"], r["source_offset"]): r["reason"]
        for r in _decoded(letters.values, dlq_codec)
        if r["source_topic"] == OUTCOMES and r["service"] == "monitor"
    }
    assert [reasons[p] for p in positions] == [
        "undecodable",
        "unknown_schema",
        "invalid_outcome",
        "malformed",
    ]
    assert len(labelled_of(labelled.values, labelled_codec, prefix)) == len(good)


def _decoded(values: list[bytes], codec: Codec) -> list[dict[str, Any]]:
    return [codec.decode(v) for v in values]


def _sources(values: list[bytes], codec: Codec) -> set[tuple[str, int, int]]:
    return {
        (r["source_topic"], r["source_partition"], r["source_offset"])
        for r in _decoded(values, codec)
    }


def test_produce_publishes_each_events_truth_a_label_delay_later_only_when_asked(
    stack: StackSettings,
) -> None:
    codecs = CodecFactory(SchemaStore.from_dir(stack.schemas_dir))
    events_codec, outcomes_codec = codecs.for_topic(EVENTS_TOPIC), codecs.for_topic(OUTCOMES)
    events, outcomes = TopicReader(stack, EVENTS_TOPIC), TopicReader(stack, OUTCOMES)
    seed, count = 4242, 300
    truth = {
        str(item.record["event_id"]): item.is_fraud
        for item in PaymentsGenerator(seed=seed, cards=1000, rate_per_s=300.0).events(count)
    }

    def produce(*extra: str) -> None:
        done = subprocess.run(
            [
                *(sys.executable, "-m", "services.cli", "produce", "payments"),
                *("--count", str(count), "--rate", "300", "--seed", str(seed), "--cards", "1000"),
                *extra,
            ],
            env=service_env(stack),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr

    try:
        produce()  # no outcomes unless asked
        produce("--outcomes", "--label-delay", "0.5")
        events.read_until(lambda v: len(_ours(v, events_codec, truth, "event_id")) >= 2 * count, 60)
        outcomes.read_until(lambda v: len(_ours(v, outcomes_codec, truth, "event_id")) >= count, 60)
        outcomes.settle(1.0)
    finally:
        events.close()
        outcomes.close()
    published = _ours(events.values, events_codec, truth, "event_id")
    got = _ours(outcomes.values, outcomes_codec, truth, "event_id")
    assert len(got) == count, "one outcome per event of the run that asked for them, no more"
    event_times = {r["event_id"]: r["event_time"] for r in published}  # the second run's, last
    for outcome in got:
        assert outcome["is_fraud"] == truth[outcome["event_id"]]
        assert outcome["observed_at"] - event_times[outcome["event_id"]] == 500
    assert any(truth.values()) and not all(truth.values())


EVENTS_TOPIC = "payments.transactions"


def _ours(
    values: list[bytes], codec: Codec, wanted: dict[str, bool], id_field: str
) -> list[dict[str, Any]]:
    records = []
    for value in values:
        try:
            record = codec.decode(value or b"")
        except SerializationError:  # other tests' bytes, the DLQ test's tombstone
            continue
        if record[id_field] in wanted:
            records.append(record)
    return records


def report_when(
    stack: StackSettings, done: Callable[[dict[str, Any]], bool], timeout_s: float = 60.0
) -> dict[str, Any]:
    """``streamml monitor report payments --json``, until ``done`` says its answer is complete."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = subprocess.run(
            [sys.executable, "-m", "services.cli", "monitor", "report", "payments", "--json"],
            env=service_env(stack),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert answer.returncode in (0, 1), answer.stderr
        reported: dict[str, Any] = json.loads(answer.stdout)
        if done(reported):
            return reported
        assert time.monotonic() < deadline, f"the report never became complete: {reported}"
        time.sleep(1.0)


def ours(reported: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    return [v for v in reported["versions"] if v["model_version"].startswith(f"{prefix}-")]


ALERTS = "ml.alerts"
RETRAIN_REQUESTS = "ml.retrain.requests"
CAUGHT_UP = "quality watch: caught up"


def test_a_concept_drift_raises_one_alert_and_a_retrain_request(
    stack: StackSettings, logs_dir: Path
) -> None:
    codecs = CodecFactory(SchemaStore.from_dir(stack.schemas_dir))
    encode = {t: codecs.for_topic(t).encode for t in (FEATURES, PREDICTIONS, OUTCOMES)}
    alerts_codec, requests_codec = codecs.for_topic(ALERTS), codecs.for_topic(RETRAIN_REQUESTS)
    prefix = uuid.uuid4().hex[:8]
    rng = random.Random(17)
    made = events(prefix, rng)  # 3000 events
    change = 1500
    version = f"{prefix}-drifting"
    for i, e in enumerate(made):  # right 95 % of the time, then 40 % wrong from `change` on
        e["prediction"]["model_version"], e["prediction"]["served_by"] = version, "champion"
        wrong = rng.random() < (0.05 if i < change else 0.4)
        e["outcome"]["is_fraud"] = e["prediction"]["decision"] != wrong
    log_path = logs_dir / f"monitor-drift-{prefix}.log"
    port = free_port()
    env = service_env(
        stack,
        {
            "STREAMML_MONITOR_INSTANCE": f"monitor-drift-{prefix}",
            "STREAMML_MONITOR_SNAPSHOT_EVERY_S": "1",
            "STREAMML_METRICS_PORT": str(port),
        },
    )
    alerts, requests = TopicReader(stack, ALERTS), TopicReader(stack, RETRAIN_REQUESTS)
    monitor = ServiceProcess("monitor", env, log_path, "--domain", "payments")
    try:
        deadline = time.monotonic() + 120
        while CAUGHT_UP not in log_path.read_text():  # alarms on history are not raised again
            assert time.monotonic() < deadline and monitor.process.poll() is None
            time.sleep(0.5)
        for topic, kind in ((FEATURES, "vector"), (PREDICTIONS, "prediction")):
            publish(
                stack, topic, [(e[kind]["card_id"].encode(), encode[topic](e[kind])) for e in made]
            )
        # Outcomes as a stream delivers them: in event order, a few at a time (the detector
        # reads pairs in the order they are joined; a bulk back-fill would shuffle them).
        for start in range(0, len(made), 100):
            chunk = made[start : start + 100]
            publish(stack, OUTCOMES, [(None, encode[OUTCOMES](e["outcome"])) for e in chunk])
            time.sleep(0.2)

        def ours(values: list[bytes]) -> list[dict[str, Any]]:
            return [a for a in _decoded(values, alerts_codec) if a["model_version"] == version]

        alerts.read_until(lambda v: bool(ours(v)), 120)
        alerts.settle(3.0)
        raised = ours(alerts.values)
        assert len(raised) == 1, f"one drift, one alert: {raised}"
        (alert,) = raised
        requests.read_until(
            lambda v: any(alert["alert_id"] in r["alert_ids"] for r in _decoded(v, requests_codec)),
            30,
        )
        report_when(stack, lambda r: alert["alert_id"] in {a["alert_id"] for a in r["alerts"]})
        ours_total = (
            f'streamml_monitor_labelled_pairs{{domain="payments",model_version="{version}",'
            'scope="total",segment="all",served_by="champion"} 3000.0'
        )
        exposed = scrape_until(port, ours_total)
        assert 'streamml_monitor_alerts_total{domain="payments",kind="concept_drift"}' in exposed
        assert monitor.process.poll() is None
    finally:
        assert monitor.stop() == 0
        alerts.close()
        requests.close()
    assert (alert["kind"], alert["subject"], alert["statistic"]) == (
        "concept_drift",
        "error_rate",
        "adwin",
    )
    assert alert["domain"] == "payments" and alert["served_by"] == "champion"
    assert alert["baseline"] is not None and alert["value"] > alert["baseline"]
    (request,) = [
        r for r in _decoded(requests.values, requests_codec) if alert["alert_id"] in r["alert_ids"]
    ]
    assert request["domain"] == "payments" and request["model_version"] == version
    # The change point is near the event time of the first drifted event (100 ms apart each).
    first_drifted = made[change]["prediction"]["event_time"]
    assert request["change_point"] is not None
    assert abs(request["change_point"] - first_drifted) <= 400 * 100


INTEGER_FEATURES = ("txn_count_5m", "txn_count_1h", "txn_count_24h")


def sample_like(histogram: dict[str, Any], integer: bool, rng: random.Random) -> float | int:
    """A value drawn from a reference histogram: a bin by its count, a point inside it (the
    end bins, open on one side, get a span as wide as an average inner bin)."""
    edges, counts = histogram["edges"], histogram["counts"]
    width = (edges[-1] - edges[0]) / max(len(edges) - 1, 1) or 1.0
    while True:
        (b,) = rng.choices(range(len(counts)), weights=counts)
        low = edges[b - 1] if b > 0 else edges[0] - width
        high = edges[b] if b < len(edges) else edges[-1] + width
        if not integer:
            return rng.uniform(low, high)
        value = math.floor(high - 1e-9) if b == 0 else math.ceil(low)
        if value < high:  # a bin between two fractional edges may hold no integer
            return max(value, 0)


def test_a_shifted_feature_raises_a_data_drift_alert_naming_it(
    stack: StackSettings, logs_dir: Path
) -> None:
    from services.core.domains import load_domain
    from services.registry.stages import promote
    from services.registry.versions import CANDIDATE, read_registry
    from services.registry.versions import publish as publish_versions
    from services.trainer.publish import train_and_register

    codecs = CodecFactory(SchemaStore.from_dir(stack.schemas_dir))
    domain = load_domain(stack.features_dir, "payments")
    version = train_and_register(stack, domain, seed=11, events=20_000)
    before = read_registry(stack, codecs).champion(domain.model_name)
    promote(stack, codecs, domain.model_name, version)
    try:
        _shifted_feature_raises_one_alert(stack, logs_dir, codecs, domain, version)
    finally:  # later tests (test_pipeline) expect the registry as they would find it alone
        if before is not None:
            promote(stack, codecs, domain.model_name, before.version)
        else:
            ours = read_registry(stack, codecs).get(domain.model_name, version)
            publish_versions(stack, codecs, [ours.staged(CANDIDATE)])


def _shifted_feature_raises_one_alert(
    stack: StackSettings, logs_dir: Path, codecs: CodecFactory, domain: Any, version: str
) -> None:
    from services.registry.artifacts import ModelStore

    reference = ModelStore(stack.models_dir).card(domain.model_name, version)["reference"]
    histograms = reference["features"]
    prefix = uuid.uuid4().hex[:8]
    rng = random.Random(18)
    vectors = []
    templates = [e for n in range(4) for e in events(f"{prefix}{n}", rng)][:11_000]
    start_ms = int(time.time() * 1000) - 3_600_000
    for i, e in enumerate(templates):
        # One vector every 100 ms of event time: the drift persists in event time.
        vector = dict(e["vector"], event_time=start_ms + 100 * i)
        for name in histograms:
            if name in vector:
                vector[name] = sample_like(histograms[name], name in INTEGER_FEATURES, rng)
        if i >= 1000:  # from here on, amounts three times larger
            vector["amount"] = float(vector["amount"]) * 3
        vectors.append(vector)
    log_path = logs_dir / f"monitor-data-drift-{prefix}.log"
    env = service_env(
        stack,
        {
            "STREAMML_MONITOR_INSTANCE": f"monitor-data-{prefix}",
            "STREAMML_MONITOR_SNAPSHOT_EVERY_S": "1",
        },
    )
    alerts_codec, requests_codec = codecs.for_topic(ALERTS), codecs.for_topic(RETRAIN_REQUESTS)
    alerts, requests = TopicReader(stack, ALERTS), TopicReader(stack, RETRAIN_REQUESTS)
    monitor = ServiceProcess("monitor", env, log_path, "--domain", "payments")
    try:
        deadline = time.monotonic() + 120
        while "reference" not in log_path.read_text() or CAUGHT_UP not in log_path.read_text():
            assert time.monotonic() < deadline and monitor.process.poll() is None
            time.sleep(0.5)
        codec = codecs.for_topic(FEATURES)
        publish(stack, FEATURES, [(v["card_id"].encode(), codec.encode(v)) for v in vectors])

        def data_drift(values: list[bytes]) -> list[dict[str, Any]]:
            return [
                a
                for a in _decoded(values, alerts_codec)
                if a["kind"] == "data_drift" and a["model_version"] == version
            ]

        alerts.read_until(lambda v: bool(data_drift(v)), 120)
        alerts.settle(3.0)
        # Still there five checks later: a retraining request naming the alert.
        asked = requests.read_until(
            lambda v: any(
                r["alert_ids"] == [a["alert_id"]]
                for r in _decoded(v, requests_codec)
                for a in data_drift(alerts.values)
            ),
            60,
        )
        reported = report_when(
            stack,
            lambda r: any(
                d["subject"] == "amount" and d["model_version"] == version for d in r["drift"]
            ),
        )
        assert monitor.process.poll() is None
    finally:
        assert monitor.stop() == 0
        alerts.close()
        requests.close()
    (amount,) = [d for d in reported["drift"] if d["subject"] == "amount"]
    assert amount["psi"] > domain.monitoring.data.psi_threshold
    others = [d for d in reported["drift"] if d["subject"] not in ("amount", "score")]
    assert others and all(d["psi"] < domain.monitoring.data.psi_threshold for d in others)
    raised = data_drift(alerts.values)
    assert [a["subject"] for a in raised] == ["amount"], raised
    (alert,) = raised
    assert alert["statistic"] in ("psi", "ks") and alert["value"] > alert["threshold"]
    assert alert["window_pairs"] == domain.monitoring.data.window_vectors
    (request,) = [r for r in _decoded(asked, requests_codec) if alert["alert_id"] in r["alert_ids"]]
    assert request["model_version"] == version and "amount" in request["reason"]


def scrape_until(port: int, line: str, timeout_s: float = 30.0) -> str:
    """The monitor's /metrics exposition, once it holds ``line``."""
    deadline = time.monotonic() + timeout_s
    while True:
        url = f"http://127.0.0.1:{port}/metrics"
        body: str = urllib.request.urlopen(url, timeout=5).read().decode()
        if line in body or time.monotonic() > deadline:
            near = [x for x in body.splitlines() if line.split("{", maxsplit=1)[0] in x][:6]
            assert line in body, f"{line} never exposed; near it: {near}"
            return body
        time.sleep(0.5)
