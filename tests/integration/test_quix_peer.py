"""The Quix Streams peer (services/bench/quix) on real parts, in its own virtualenv: every event
gets one feature vector and one prediction, with the exact windowed features, and the
merchants' counts reach the online store."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from feast import FeatureStore

from services.bench.peer.feast_repo import REPO_DIR, view_name
from services.bench.quix.names import APP_ID
from services.bench.quix.runner import QuixPipeline
from services.core.domains import load_domain
from services.core.settings import StackSettings
from services.registry.artifacts import ModelStore, path_of
from services.trainer.publish import train_and_register
from tests.integration.helpers import TopicReader, publish, skip_what_is_there
from tests.outside import OutsideCodec

pytestmark = pytest.mark.integration

TRANSACTIONS = OutsideCodec("payments.transactions.avsc")
FEATURES = OutsideCodec("payments.features.avsc")
PREDICTIONS = OutsideCodec("payments.predictions.avsc")
EVENTS = 300
STEP_MS = 7_000  # 300 events over 35 minutes: the 5-minute window holds a few, the hour all
CARDS = 13


def test_the_quix_peer_publishes_one_exact_vector_and_one_prediction_per_event(
    stack: StackSettings, logs_dir: Path
) -> None:
    domain = load_domain(stack.features_dir, "payments")
    version = train_and_register(stack, domain, seed=12, events=2_000)
    card = ModelStore(stack.models_dir).card(domain.model_name, version)
    skip_what_is_there(stack, domain.topics.events, APP_ID)
    home = logs_dir / "quix"
    peer = QuixPipeline(stack, home, path_of(str(card["artifact_uri"])), version)
    peer.start()
    try:
        sent = transactions()
        publish(
            stack,
            domain.topics.events,
            [(str(t["card_id"]).encode(), TRANSACTIONS.encode(t)) for t in sent],
        )
        wanted = {str(t["event_id"]) for t in sent}
        vectors = read_all(stack, domain.topics.features, FEATURES, wanted)
        predictions = read_all(stack, domain.topics.predictions, PREDICTIONS, wanted)
        online = (
            FeatureStore(repo_path=str(home / REPO_DIR))
            .get_online_features(
                features=[f"{view_name('merchant')}:merchant_txn_count_1h"],
                entity_rows=[{"merchant_id": m} for m in sorted({t["merchant_id"] for t in sent})],
            )
            .to_dict()
        )
    finally:
        peer.stop()

    assert Counter(v["event_id"] for v in vectors) == Counter(wanted), "not one vector each"
    assert Counter(p["event_id"] for p in predictions) == Counter(wanted), "not one each"
    by_id = {str(t["event_id"]): t for t in sent}
    for vector in vectors:
        expected = exact_card_features(sent, by_id[vector["event_id"]])
        assert {k: vector[k] for k in expected} == pytest.approx(expected), vector["event_id"]
    for prediction in predictions:
        event = by_id[prediction["event_id"]]
        assert prediction["online_features"] == {"merchant_txn_count_1h": tiled_count(sent, event)}
        assert prediction["model_version"] == version
        assert prediction["served_by"] == "champion"
        assert 0.0 <= prediction["score"] <= 1.0
    newest = {t["merchant_id"]: t for t in sent}  # in time order: the last one wins
    assert online["merchant_txn_count_1h"] == [
        tiled_count(sent, newest[m]) for m in online["merchant_id"]
    ]


def transactions() -> list[dict[str, Any]]:
    start = int(time.time() * 1000) - EVENTS * STEP_MS
    prefix = uuid.uuid4().hex[:6]
    return [
        {
            "event_id": uuid.uuid4().hex,
            "card_id": f"quix-{prefix}-card-{i % CARDS}",
            # One card per merchant: its events reach the merchant's partition in time order,
            # so the window's count is exact (Quix counts an event late by its arrival).
            "merchant_id": f"quix-{prefix}-m-{i % CARDS}",
            "amount": 3.0 + (i * 37) % 200,
            "currency": "EUR",
            "event_time": start + i * STEP_MS,
        }
        for i in range(EVENTS)
    ]


def tiled_count(sent: list[dict[str, Any]], event: dict[str, Any]) -> int:
    """The merchant's events up to ``event`` in its 5-minute tile and the 11 before (ours)."""
    tile = 300_000
    since = (event["event_time"] // tile - 11) * tile
    return sum(
        1
        for t in sent
        if t["merchant_id"] == event["merchant_id"]
        and since <= t["event_time"] <= event["event_time"]
    )


def exact_card_features(sent: list[dict[str, Any]], event: dict[str, Any]) -> dict[str, Any]:
    """The card's features as of ``event``, from every event sent (windows include both ends)."""
    at = event["event_time"]
    mine = [t for t in sent if t["card_id"] == event["card_id"] and t["event_time"] <= at]
    hour = [t["amount"] for t in mine if at - 3_600_000 <= t["event_time"]]
    day = [t["amount"] for t in mine if at - 86_400_000 <= t["event_time"]]
    earlier = [t["event_time"] for t in mine if t["event_time"] < at]
    return {
        "txn_count_5m": sum(1 for t in mine if at - 300_000 <= t["event_time"]),
        "txn_count_1h": len(hour),
        "txn_count_24h": len(day),
        "amount_sum_1h": sum(hour),
        "amount_mean_24h": sum(day) / len(day),
        "amount_max_24h": max(day),
        "seconds_since_last_txn": (at - max(earlier)) / 1000 if earlier else None,
    }


def read_all(
    stack: StackSettings, topic: str, codec: OutsideCodec, wanted: set[str]
) -> list[dict[str, Any]]:
    """Every record of ``wanted`` events on ``topic`` (read_committed), a late copy included."""
    reader = TopicReader(stack, topic)
    found: list[dict[str, Any]] = []
    decoded = [0]

    def all_there(values: list[bytes]) -> bool:
        for value in values[decoded[0] :]:
            try:
                record = codec.decode(value)
            except AssertionError:  # another test's record, in a schema version of its own
                continue
            if record["event_id"] in wanted:
                found.append(record)
        decoded[0] = len(values)
        return wanted <= {r["event_id"] for r in found}

    try:
        reader.read_until(all_there, 120)
        all_there(reader.settle(3.0))
    finally:
        reader.close()
    return found
