"""Replays after a crash: each event gets its first vector again, and nothing is counted twice."""

from __future__ import annotations

import random

from services.core.deadletter import SourcePosition
from services.core.declarations import Domain
from services.core.serde import CodecFactory
from services.featurizer.processor import Accepted, Duplicate, EventProcessor
from services.featurizer.windows import EntityWindow

EVENTS = "payments.transactions"
NOW = 1_767_225_600_000


class JsonStore:
    """Keeps windows as the faust table does: JSON in, JSON out."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, object]] = {}

    def get(self, key: str) -> EntityWindow | None:
        return EntityWindow.from_json(self.data[key]) if key in self.data else None

    def put(self, key: str, window: EntityWindow) -> None:
        self.data[key] = window.to_json()


def stream(n: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    return [
        {
            "event_id": f"e{seed}-{i}",
            "card_id": f"card-{rng.randrange(4)}",
            "merchant_id": f"m-{rng.randrange(9)}",
            "amount": round(rng.uniform(1, 500), 2),
            "currency": "EUR",
            "event_time": NOW - rng.randrange(0, 3_600_000),
        }
        for i in range(n)
    ]


def test_a_replayed_event_gets_its_first_vector_and_changes_nothing(
    payments: Domain, codecs: CodecFactory
) -> None:
    codec = codecs.for_topic(EVENTS)
    processor = EventProcessor(payments, codec, clock_ms=lambda: NOW)
    events = [codec.encode(e) for e in stream(200, seed=1)]
    store = JsonStore()
    first = [
        processor.process(None, v, SourcePosition(EVENTS, 0, i), store)
        for i, v in enumerate(events)
    ]
    assert all(isinstance(v, Accepted) and not v.replayed for v in first)
    state = dict(store.data)

    # The crash lost the commit of the last 120 events but not their state: they are read again.
    again = [
        processor.process(None, events[i], SourcePosition(EVENTS, 0, i), store)
        for i in range(80, 200)
    ]
    assert store.data == state, "a replay changed the state"
    for before, after in zip(first[80:], again, strict=True):
        assert isinstance(before, Accepted) and isinstance(after, Accepted)
        assert (
            after.replayed and after.vector == before.vector and after.features == before.features
        )


def test_a_retry_from_another_offset_is_a_duplicate_not_a_replay(
    payments: Domain, codecs: CodecFactory
) -> None:
    codec = codecs.for_topic(EVENTS)
    processor = EventProcessor(payments, codec, clock_ms=lambda: NOW)
    value = codec.encode(stream(1, seed=2)[0])
    store = JsonStore()
    assert isinstance(processor.process(None, value, SourcePosition(EVENTS, 1, 7), store), Accepted)
    state = dict(store.data)
    retry = processor.process(None, value, SourcePosition(EVENTS, 1, 8), store)
    assert isinstance(retry, Duplicate) and store.data == state
