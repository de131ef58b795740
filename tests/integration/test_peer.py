"""The benchmark's peer (services/bench/peer) on real parts: every event gets a model prediction."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from services.bench.peer.app import APP_ID
from services.bench.peer.runner import PeerPipeline
from services.core.domains import load_domain
from services.core.settings import StackSettings
from services.registry.artifacts import ModelStore, path_of
from services.trainer.publish import train_and_register
from tests.integration.helpers import TopicReader, by_event_id, publish, skip_what_is_there
from tests.outside import OutsideCodec

pytestmark = pytest.mark.integration

TRANSACTIONS = OutsideCodec("payments.transactions.avsc")
PREDICTIONS = OutsideCodec("payments.predictions.avsc")
EVENTS = 200


def test_the_peer_predicts_every_event_with_the_model_it_was_given(
    stack: StackSettings, logs_dir: Path
) -> None:
    domain = load_domain(stack.features_dir, "payments")
    version = train_and_register(stack, domain, seed=11, events=2_000)
    card = ModelStore(stack.models_dir).card(domain.model_name, version)
    skip_what_is_there(stack, domain.topics.events, APP_ID)
    peer = PeerPipeline(stack, logs_dir / "peer", path_of(str(card["artifact_uri"])), version)
    peer.start()
    try:
        sent = [transaction(i) for i in range(EVENTS)]
        publish(
            stack,
            domain.topics.events,
            [(str(t["card_id"]).encode(), TRANSACTIONS.encode(t)) for t in sent],
        )
        wanted = {str(t["event_id"]) for t in sent}
        reader = TopicReader(stack, domain.topics.predictions)
        values = reader.read_until(lambda values: len(predicted(values, wanted)) == EVENTS, 60)
        reader.close()
    finally:
        peer.stop()
    found = predicted(values, wanted)
    assert set(found) == wanted, f"{EVENTS - len(found)} events without a prediction"
    for predictions in found.values():
        for prediction in predictions:
            assert 0.0 <= prediction["score"] <= 1.0
            assert prediction["model_version"] == version
            assert prediction["model_name"] == domain.model_name
            assert prediction["served_by"] == "champion"


def transaction(i: int) -> dict[str, object]:
    return {
        "event_id": uuid.uuid4().hex,
        "card_id": f"peer-card-{i % 40}",
        "merchant_id": f"peer-m-{i % 9}",
        "amount": 5.0 + i,
        "currency": "EUR",
        "event_time": int(time.time() * 1000),
    }


def predicted(values: list[bytes], wanted: set[str]) -> dict[str, list[dict[str, object]]]:
    records = (PREDICTIONS.decode(v) for v in values if v.startswith(PREDICTIONS.header))
    return by_event_id(records, wanted)
