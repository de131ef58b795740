"""EventProcessor: verdicts, feature vectors and dead letters, with a dict-backed WindowStore."""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Callable
from typing import Any

import pytest

from services.core.deadletter import SourcePosition
from services.core.declarations import Domain
from services.core.schemas import SchemaStore
from services.core.serde import CodecFactory
from services.core.windows import EntityWindow
from services.featurizer.processor import Accepted, Duplicate, EventProcessor, Rejected
from services.featurizer.state import WindowTable
from tests.expected import CARD_FEATURES

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
NOW = 1_767_312_000_000  # 2026-01-02T00:00:00Z, the processor's fixed clock
EVENTS = "payments.transactions"
SOURCE = SourcePosition(EVENTS, 3, 1234)
KEY = b"card-1"
VECTOR_FIELDS = {
    "event_id",
    "card_id",
    "merchant_id",
    "event_time",
    "amount",
    *CARD_FEATURES,
}


class DictStore:
    """Holds the window objects themselves."""

    def __init__(self) -> None:
        self.data: dict[str, EntityWindow] = {}

    def get(self, key: str) -> EntityWindow | None:
        return self.data.get(key)

    def put(self, key: str, window: EntityWindow) -> None:
        self.data[key] = window

    def snapshot(self) -> str:
        return repr(sorted((k, repr(w)) for k, w in self.data.items()))


class ChangelogStore(DictStore):
    """Keeps only the compacted changelog: every read restores the window from it, as a
    restarted featurizer would. A change the changelog does not carry is lost."""

    def __init__(self, domain: Domain, schemas: SchemaStore) -> None:
        super().__init__()
        self._new_table = lambda: WindowTable(
            domain, domain.key_entity, schemas, "streamml-featurizer"
        )
        self._table = self._new_table()
        self.log: dict[bytes, bytes] = {}
        self._batches = 0  # each put is a committed batch; its number stands for the offset

    def get(self, key: str) -> EntityWindow | None:
        restored = self._new_table()
        restored.restore(0, list(self.log.items()), self._batches or None)
        return restored.partition(0).get(key)

    def put(self, key: str, window: EntityWindow) -> None:
        self._table.partition(0).put(key, window)
        self._batches += 1
        for record in self._table.drain({0: self._batches}):
            self.log.pop(record.key, None)  # compaction keeps a key's latest record only
            if record.value is not None:
                self.log[record.key] = record.value

    def snapshot(self) -> str:
        return repr(sorted(self.log.items()))


@pytest.fixture
def processor(payments: Domain, codecs: CodecFactory) -> EventProcessor:
    return EventProcessor(payments, codecs.for_topic(EVENTS), clock_ms=lambda: NOW)


def encode(codecs: CodecFactory, event: dict[str, Any]) -> bytes:
    return codecs.for_topic(EVENTS).encode(event)


@pytest.mark.parametrize("store_kind", ["objects", "changelog"])
@pytest.mark.parametrize("seed", [21, 22, 23, 24])
def test_vectors_equal_a_brute_force_recomputation(
    processor: EventProcessor,
    payments: Domain,
    codecs: CodecFactory,
    reference: Any,
    make_stream: Any,
    schema_store: SchemaStore,
    store_kind: str,
    seed: int,
) -> None:
    store = DictStore() if store_kind == "objects" else ChangelogStore(payments, schema_store)
    vectors = codecs.for_topic("payments.features")
    letters = codecs.for_topic("payments.transactions.dlq")
    events = make_stream(seed)
    shift = NOW - 5 * MINUTE_MS - max(e["event_time"] for e in events)
    seen: dict[str, int] = {}
    for offset, original in enumerate(events):
        event = {**original, "event_time": original["event_time"] + shift}
        where = f"seed {seed}, offset {offset}, event {event['event_id']}"
        value = encode(codecs, event)
        before = store.snapshot()
        verdict = processor.process(
            event["card_id"].encode(), value, SourcePosition(EVENTS, 0, offset), store
        )
        expected_verdict, expected = reference.offer(event)
        seen[expected_verdict] = seen.get(expected_verdict, 0) + 1
        if expected_verdict == "duplicate":
            assert verdict == Duplicate(event["event_id"]), where
            assert store.snapshot() == before, f"{where}: a duplicate changed the state"
        elif expected_verdict == "late":
            assert isinstance(verdict, Rejected), f"{where}: {verdict}"
            assert verdict.reason == "late"
            assert verdict.dead_letter["original_value"] == value
            assert verdict.dead_letter["source_offset"] == offset
            assert letters.decode(letters.encode(verdict.dead_letter)) == verdict.dead_letter
            assert store.snapshot() == before, f"{where}: a late event changed the state"
        else:
            assert isinstance(verdict, Accepted), f"{where}: {verdict}"
            assert expected is not None
            assert (verdict.key, verdict.event_time_ms) == (event["card_id"], event["event_time"])
            assert_vector(verdict.vector, event, expected, where)
            assert vectors.decode(vectors.encode(verdict.vector)) == verdict.vector
    assert seen["accepted"] > 200 and seen["late"] > 0 and seen["duplicate"] > 0


def assert_vector(
    vector: dict[str, Any], event: dict[str, Any], expected: dict[str, Any], where: str
) -> None:
    assert set(vector) == VECTOR_FIELDS, where
    for name in ("event_id", "card_id", "merchant_id", "event_time", "amount"):
        assert vector[name] == event[name], f"{where}: {name}"
    for name, want in expected.items():
        got = vector[name]
        if want is None:
            assert got is None, f"{where}: {name}={got!r}, expected null"
        elif name.startswith("txn_count"):
            assert type(got) is int and got == want, f"{where}: {name}={got!r}, expected {want}"
        else:
            assert got == pytest.approx(want, rel=1e-9, abs=1e-9), f"{where}: {name}={got!r}"


def test_a_retry_after_its_original_left_retention_is_not_counted_again(
    processor: EventProcessor, codecs: CodecFactory, make_transaction: Any
) -> None:
    store = DictStore()
    first = make_transaction("old", NOW - 30 * HOUR_MS)
    newer = make_transaction("new", NOW - HOUR_MS)
    for event in (first, newer):
        assert isinstance(processor.process(KEY, encode(codecs, event), SOURCE, store), Accepted)
    before = store.snapshot()
    retry = processor.process(KEY, encode(codecs, first), SOURCE, store)
    assert not isinstance(retry, Accepted)
    assert store.snapshot() == before


# --- dead letters ---------------------------------------------------------------------------


def valid_event(**changes: Any) -> dict[str, Any]:
    event = {
        "event_id": "evt-1",
        "card_id": "card-1",
        "merchant_id": "m-1",
        "amount": 12.5,
        "currency": "EUR",
        "event_time": NOW - MINUTE_MS,
    }
    event.update(changes)
    return event


def _random_bytes() -> bytes:
    data = random.Random(5).randbytes(48)
    assert data[:2] != b"\xc3\x01"
    return data


def _unknown_fingerprint(codecs: CodecFactory) -> bytes:
    data = encode(codecs, valid_event())
    return data[:2] + struct.pack("<q", 1234567890123) + data[10:]


def _truncated(codecs: CodecFactory) -> bytes:
    return encode(codecs, valid_event())[:-4]


BAD_INPUTS: dict[str, tuple[str, Callable[[CodecFactory], bytes | None]]] = {
    "tombstone": ("undecodable", lambda codecs: None),
    "random bytes": ("undecodable", lambda codecs: _random_bytes()),
    "empty bytes": ("undecodable", lambda codecs: b""),
    "unknown fingerprint": ("unknown_schema", _unknown_fingerprint),
    "truncated body": ("malformed", _truncated),
    "NaN amount": ("check_failed", lambda c: encode(c, valid_event(amount=math.nan))),
    "infinite amount": ("check_failed", lambda c: encode(c, valid_event(amount=math.inf))),
    "negative amount": ("check_failed", lambda c: encode(c, valid_event(amount=-0.01))),
    "empty event_id": ("check_failed", lambda c: encode(c, valid_event(event_id=""))),
    "blank event_id": ("check_failed", lambda c: encode(c, valid_event(event_id="  "))),
    "lower-case currency": ("check_failed", lambda c: encode(c, valid_event(currency="eu"))),
    "four-letter currency": ("check_failed", lambda c: encode(c, valid_event(currency="EURO"))),
    "11 minutes ahead": (
        "check_failed",
        lambda c: encode(c, valid_event(event_time=NOW + 11 * MINUTE_MS)),
    ),
    "8 days old": (
        "check_failed",
        lambda c: encode(c, valid_event(event_time=NOW - 8 * DAY_MS)),
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_becomes_a_dead_letter(
    processor: EventProcessor, codecs: CodecFactory, case: str
) -> None:
    reason, make = BAD_INPUTS[case]
    value = make(codecs)
    store = DictStore()
    verdict = processor.process(KEY, value, SOURCE, store)
    assert isinstance(verdict, Rejected), verdict
    assert verdict.reason == reason
    letter = verdict.dead_letter
    assert letter["reason"] == reason
    assert letter["detail"]
    assert letter["original_key"] == KEY
    assert letter["original_value"] == value
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (
        EVENTS,
        3,
        1234,
    )
    assert letter["service"] == "featurizer"
    assert letter["failed_at"] == NOW
    assert store.data == {}
    dlq = codecs.for_topic("payments.transactions.dlq")
    assert dlq.decode(dlq.encode(letter)) == letter


def test_check_failures_name_the_field(processor: EventProcessor, codecs: CodecFactory) -> None:
    value = encode(codecs, valid_event(currency="eu"))
    verdict = processor.process(KEY, value, SOURCE, DictStore())
    assert isinstance(verdict, Rejected)
    assert "currency" in verdict.dead_letter["detail"]


@pytest.mark.parametrize(
    "changes",
    [
        {"amount": 1e300},
        {"amount": 0.0},
        {"event_time": NOW + 9 * MINUTE_MS},
        {"event_time": NOW + 10 * MINUTE_MS},
        {"event_time": NOW - 6 * DAY_MS},
        {"event_id": "x", "currency": "JPY"},
    ],
)
def test_unusual_but_valid_events_are_accepted(
    processor: EventProcessor, codecs: CodecFactory, changes: dict[str, Any]
) -> None:
    event = valid_event(**changes)
    verdict = processor.process(KEY, encode(codecs, event), SOURCE, DictStore())
    assert isinstance(verdict, Accepted), verdict
    assert verdict.vector["amount"] == event["amount"]
    assert verdict.vector["amount_sum_1h"] == event["amount"]
    assert verdict.vector["txn_count_5m"] == 1
    vectors = codecs.for_topic("payments.features")
    assert vectors.decode(vectors.encode(verdict.vector)) == verdict.vector


def test_rejections_leave_the_state_alone(processor: EventProcessor, codecs: CodecFactory) -> None:
    store = DictStore()
    assert isinstance(
        processor.process(KEY, encode(codecs, valid_event()), SOURCE, store), Accepted
    )
    before = store.snapshot()
    for case, (_, make) in BAD_INPUTS.items():
        verdict = processor.process(KEY, make(codecs), SOURCE, store)
        assert isinstance(verdict, Rejected), case
        assert store.snapshot() == before, case
