"""An online (river) model serving on real parts: it scores first, learns later from the
monitor's join (``payments.labelled``), its learned state is saved and registered as a new
version with where it stopped, and a scorer restarted on that version resumes there."""

from __future__ import annotations

import contextlib
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Consumer, TopicPartition

from services.core.declarations import Domain
from services.core.domains import load_domain
from services.core.schemas import SchemaStore
from services.core.serde import CodecFactory
from services.core.settings import StackSettings
from services.featurestore.feast_objects import feature_view_name
from services.featurestore.store import apply_declarations, open_store
from services.models.river import RiverModel
from services.registry.artifacts import ModelStore
from services.registry.stages import promote
from services.registry.versions import read_registry
from services.scorer.learning.labelled import model_input
from services.scorer.learning.learner import resume_positions
from services.stack.processes import free_port
from services.stack.services import ServiceProcess, service_env
from services.trainer.publish import RIVER, train_and_register
from tests.integration.helpers import TopicReader, clear_trials, publish
from tests.outside import OutsideCodec

pytestmark = pytest.mark.integration

FEATURES = OutsideCodec("payments.features.avsc")
OUTCOMES = OutsideCodec("payments.outcomes.avsc")
PREDICTIONS = OutsideCodec("payments.predictions.avsc")
LABELLED = OutsideCodec("payments.labelled.avsc")
MERCHANT_COUNT = 5


def scrape(port: int, name: str, labels: str) -> float:
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:  # not listening yet
        return 0.0
    for line in body.splitlines():
        if line.startswith(f"streamml_{name}{{") and labels in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_for(check: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.5)
    return check()


def vectors_for(
    prefix: str, merchant: str, start: int, count: int, now: int
) -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"river-{prefix}-{i}",
            "card_id": f"river-card-{prefix}-{i % 40}",
            "merchant_id": merchant,
            "event_time": now + i,
            "amount": 5.0 + (i % 7) * (90.0 if i % 5 == 0 else 3.0),
            "txn_count_5m": 1 + (i % 5 == 0) * 6,
            "txn_count_1h": 2,
            "txn_count_24h": 3,
            "amount_sum_1h": 40.0,
            "amount_mean_24h": 20.0,
            "amount_max_24h": 60.0,
            "seconds_since_last_txn": 120.0,
        }
        for i in range(start, start + count)
    ]


def serve(stack: StackSettings, domain: Domain, vectors: list[dict[str, Any]]) -> list[Any]:
    """Publishes the vectors and waits for their predictions."""
    wanted = {str(v["event_id"]) for v in vectors}
    reader = TopicReader(stack, domain.topics.predictions)
    publish(
        stack,
        domain.topics.features,
        [(str(v["card_id"]).encode(), FEATURES.encode(v)) for v in vectors],
    )
    values = reader.read_until(
        lambda vs: wanted <= {PREDICTIONS.decode(v)["event_id"] for v in vs}, 60
    )
    reader.close()
    return [p for p in map(PREDICTIONS.decode, values) if p["event_id"] in wanted]


def label(stack: StackSettings, domain: Domain, vectors: list[dict[str, Any]], now: int) -> None:
    """Publishes the vectors' outcomes and waits for the monitor's labelled pairs."""
    wanted = {str(v["event_id"]) for v in vectors}
    labelled = TopicReader(stack, domain.topics.labelled)
    outcomes = [
        {"event_id": v["event_id"], "is_fraud": v["txn_count_5m"] > 1, "observed_at": now + 10_000}
        for v in vectors
    ]
    publish(stack, domain.topics.outcomes, [(b"x", OUTCOMES.encode(o)) for o in outcomes])
    pairs = labelled.read_until(
        lambda vs: wanted <= {LABELLED.decode(v)["event_id"] for v in vs}, 90
    )
    labelled.close()
    mine = [r for r in map(LABELLED.decode, pairs) if r["event_id"] in wanted]
    assert {r["event_id"] for r in mine} == wanted
    # The monitor's pair carries the model's whole input as served: vector and online features.
    assert all(r["features"] is not None for r in mine)
    assert {str(r["prediction"]["online_features"]) for r in mine} == {
        str({"merchant_txn_count_1h": MERCHANT_COUNT})
    }


def learnable_in(
    stack: StackSettings,
    domain: Domain,
    names: tuple[str, ...],
    start: dict[int, int],
    end: dict[int, int],
) -> set[str]:
    """Event ids a model with inputs ``names`` can learn from in ``payments.labelled`` between
    two positions (from ``start`` up to, not including, ``end``)."""
    topic = domain.topics.labelled
    consumer = Consumer(
        {
            "bootstrap.servers": stack.bootstrap,
            "group.id": f"test-range-{uuid.uuid4().hex}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    todo = {p: (start.get(p, 0), stop) for p, stop in end.items() if stop > start.get(p, 0)}
    consumer.assign([TopicPartition(topic, p, first) for p, (first, _) in todo.items()])
    found: set[str] = set()
    deadline = time.monotonic() + 60
    while todo and time.monotonic() < deadline:
        for message in consumer.consume(500, 0.2):
            partition, offset = message.partition(), message.offset()
            if message.error() is not None or partition is None or partition not in todo:
                continue
            _, stop = todo[partition]
            value = message.value()
            if offset is not None and offset < stop and value is not None:
                record = LABELLED.decode(value)
                if model_input(domain, record, names) is not None:
                    found.add(record["event_id"])
            if offset is not None and offset >= stop - 1:
                del todo[partition]
    consumer.close()
    assert not todo, f"labelled not read to the end: {todo}"
    return found


def start_scorer(stack: StackSettings, prefix: str, log_path: Path) -> tuple[ServiceProcess, int]:
    port = free_port()
    env = {
        "STREAMML_SCORER_APP_ID": f"river-{prefix}",
        "STREAMML_METRICS_PORT": str(port),
        "STREAMML_SCORER_SNAPSHOT_EVERY_S": "1",
    }
    scorer = ServiceProcess("scorer", service_env(stack, env), log_path)
    # The learner of a model starts at the end of the topic (or where its snapshot stopped)
    # once the model is loaded: what is published before that is not its to learn.
    assert wait_for(lambda: "learns from payments.labelled" in log_path.read_text(), 90)
    return scorer, port


def test_a_river_model_learns_from_the_monitors_join_and_resumes_where_its_snapshot_stopped(
    stack: StackSettings, logs_dir: Path
) -> None:
    domain = load_domain(stack.features_dir, "payments")
    codecs = CodecFactory(SchemaStore.from_dir(stack.schemas_dir))
    version = train_and_register(stack, domain, seed=21, events=3000, kind=RIVER)
    clear_trials(stack, domain.model_name)
    promote(stack, codecs, domain.model_name, version)
    prefix = uuid.uuid4().hex[:8]
    merchant = f"river-m-{prefix}"
    now = int(time.time() * 1000)
    apply_declarations(stack, [domain])
    import pandas as pd

    open_store(stack).write_to_online_store(
        feature_view_name(domain, "merchant"),
        pd.DataFrame(
            [
                {
                    "merchant_id": merchant,
                    "event_time": pd.Timestamp(now, unit="ms", tz="UTC"),
                    "merchant_txn_count_1h": MERCHANT_COUNT,
                }
            ]
        ),
    )
    monitor = ServiceProcess(
        "monitor",
        service_env(stack, {"STREAMML_MONITOR_INSTANCE": f"monitor-river-{prefix}"}),
        logs_dir / "monitor-river.log",
        "--domain",
        "payments",
    )
    store = ModelStore(stack.models_dir)

    def registered(v: str) -> Any:
        return read_registry(stack, codecs).get(domain.model_name, v)

    def model_of(v: str, names: tuple[str, ...]) -> RiverModel:
        record = registered(v)
        return RiverModel.from_bytes(store.load_verified(record.artifact_uri, record.sha256), names)

    def snapshot_after(parent: str, learned_at_least: int) -> Any:
        """The newest snapshot in ``parent``'s chain once its learner learned that many pairs."""

        def newest() -> Any:
            for v in sorted(
                read_registry(stack, codecs).versions(domain.model_name),
                key=lambda v: -int(v.version) if v.version.isdigit() else 0,
            ):
                # Other tests of the session register versions named otherwise.
                if v.kind != RIVER or not v.version.isdigit() or int(v.version) <= int(parent):
                    continue
                learned = store.card(domain.model_name, v.version)["online"]["labelled"]["learned"]
                return v if learned >= learned_at_least else None
            return None

        return wait_for(newest, 90)

    with contextlib.ExitStack() as cleanup:  # the monitor stops whatever happens
        cleanup.callback(monitor.stop)
        scorer, port = start_scorer(stack, prefix, logs_dir / "scorer-river.log")
        vectors = vectors_for(prefix, merchant, 0, 200, now)
        later = vectors_for(prefix, merchant, 200, 100, now)  # labelled while no scorer runs
        try:
            predictions = serve(stack, domain, vectors + later)
            assert {(p["model_version"], p["served_by"]) for p in predictions} == {
                (version, "champion")
            }
            assert all(
                p["online_features"] == {"merchant_txn_count_1h": MERCHANT_COUNT}
                for p in predictions
            )
            label(stack, domain, vectors, now)
            assert wait_for(
                lambda: scrape(port, "scorer_labelled_total", 'result="learned"') >= len(vectors),
                60,
            )
            # Saved as a chain of snapshots, each a candidate; the newest has learned our pairs.
            saved = snapshot_after(version, len(vectors))
            assert saved is not None and saved.stage == "candidate"
            names = tuple(saved.feature_names)
            before, after = model_of(version, names), model_of(saved.version, names)
            rows = np.array(
                [
                    domain.input_row({**v, "merchant_txn_count_1h": MERCHANT_COUNT}, names)
                    for v in vectors
                ],
                dtype=np.float32,
            )
            assert not np.allclose(before.predict(rows), after.predict(rows))
        finally:
            scorer.stop()

        # Pairs joined while no scorer runs, then a scorer restarted on the newest snapshot: it
        # learns them, because it goes on from where that snapshot stopped, not from the end.
        label(stack, domain, later, now)
        resumed_from = snapshot_after(version, len(vectors)).version  # saved before the stop
        card = store.card(domain.model_name, resumed_from)
        start = resume_positions(card)
        assert start, "a snapshot records where it stopped in payments.labelled"
        clear_trials(stack, domain.model_name)
        promote(stack, codecs, domain.model_name, resumed_from)
        scorer, port = start_scorer(stack, prefix, logs_dir / "scorer-river-resumed.log")
        try:
            assert (
                "where its snapshot stopped" in (logs_dir / "scorer-river-resumed.log").read_text()
            )
            following = snapshot_after(resumed_from, len(later))
            assert following is not None
        finally:
            scorer.stop()
        following_card = store.card(domain.model_name, following.version)
        end = resume_positions(following_card)
        learned = following_card["online"]["rows_learned"] - card["online"]["rows_learned"]
        # Exactly what lies between the two positions: nothing learned twice, nothing skipped.
        between = learnable_in(stack, domain, names, start, end)
        assert {str(v["event_id"]) for v in later} <= between
        assert learned == len(between)
