"""Window tables: the changelog records they emit restore exactly the windows they hold."""

from __future__ import annotations

import io
import random
import struct
from typing import Any

import pytest
from fastavro import schemaless_reader

from services.core.declarations import Domain
from services.core.errors import SerializationError, StackError
from services.core.flatavro import long_bytes
from services.core.schemas import SchemaStore
from services.core.windows import EntityAggregator, EntityWindow, event_hash
from services.featurizer.state import (
    MARK,
    SWEEP_EVERY_MS,
    EntryCodec,
    WindowTable,
    entry_key,
    meta_key,
    parse_key,
    tile_key,
)

HOUR_MS = 3_600_000
APP = "streamml-featurizer"
COMMITTED = b"(the group's committed offset, kept beside the log)"


def compacted(log: dict[bytes, bytes], table: WindowTable) -> None:
    """Applies a drain, as one committed batch, to a dict the way log compaction keeps a key's
    latest record."""
    batch = len(log) + 1  # any offset will do: only the mark's equality to it matters
    for record in table.drain({0: batch}):
        log.pop(record.key, None)
        if record.value is not None:
            log[record.key] = record.value
    log[COMMITTED] = str(batch).encode()


def restored(domain: Domain, schemas: SchemaStore, log: dict[bytes, bytes]) -> WindowTable:
    table = WindowTable(domain, domain.key_entity, schemas, APP)
    records = [(k, v) for k, v in log.items() if k != COMMITTED]
    table.restore(0, records, int(log[COMMITTED]) if COMMITTED in log else None)
    return table


def state_of(window: EntityWindow) -> tuple[Any, ...]:
    tiles = {r: (list(t.numbers), list(t.stats)) for r, t in window.tiles.items() if len(t)}
    recent = sorted(zip(window.recent_times, window.recent_ids, strict=True))  # ties: any order
    return (tiles, recent, sorted(window.checked_ids), window.newest_ms, window.pruned_latest)


def same(a: EntityWindow | None, b: EntityWindow | None) -> bool:
    assert a is not None and b is not None
    return state_of(a) == state_of(b)


@pytest.mark.parametrize("drain_every", [1, 7, 50])
def test_a_restore_from_the_changelog_rebuilds_every_window(
    payments: Domain, schema_store: SchemaStore, make_stream: Any, drain_every: int
) -> None:
    table = WindowTable(payments, payments.key_entity, schema_store, APP)
    aggregator = EntityAggregator(payments, "card")
    lateness = int(payments.allowed_lateness.total_seconds() * 1000)
    windows = table.partition(0)
    log: dict[bytes, bytes] = {}
    for i, event in enumerate(make_stream(31, n_cards=3)):
        key = event["card_id"]
        window = windows.get(key) or EntityWindow()
        if window.has(event["event_id"]) or window.is_late(event["event_time"], lateness):
            continue
        aggregator.add(window, event["event_id"], event["event_time"], event)
        windows.put(key, window)
        if i % drain_every == 0:
            compacted(log, table)
            again = restored(payments, schema_store, log).partition(0)
            assert set(again.windows) == set(windows.windows)
            assert all(same(again.get(k), w) for k, w in windows.windows.items())
    assert any(w.pruned_latest is not None for w in windows.windows.values()), "no pruning"


def test_a_restored_window_computes_what_the_kept_one_does(
    payments: Domain, schema_store: SchemaStore, make_stream: Any
) -> None:
    """Events added after a restore get the features they would have got without one."""
    aggregator = EntityAggregator(payments, "card")
    kept = WindowTable(payments, payments.key_entity, schema_store, APP)
    log: dict[bytes, bytes] = {}
    lateness = int(payments.allowed_lateness.total_seconds() * 1000)
    for event in make_stream(9, n_cards=1):
        window = kept.partition(0).get(event["card_id"]) or EntityWindow()
        if window.has(event["event_id"]) or window.is_late(event["event_time"], lateness):
            continue
        other = restored(payments, schema_store, log).partition(0).get(event["card_id"])
        args = (event["event_id"], event["event_time"], event)
        expected = aggregator.add(window, *args)
        kept.partition(0).put(event["card_id"], window)
        compacted(log, kept)
        assert aggregator.add(other or EntityWindow(), *args) == expected
    assert kept.partition(0).get("card-0") is not None


def test_an_event_added_and_pruned_in_one_batch_leaves_no_record(
    payments: Domain, schema_store: SchemaStore
) -> None:
    table = WindowTable(payments, payments.key_entity, schema_store, APP)
    aggregator = EntityAggregator(payments, "card")
    window = EntityWindow()
    aggregator.add(window, "old", 0, {"amount": 1.0})
    aggregator.add(window, "new", 30 * HOUR_MS, {"amount": 2.0})  # "old" is out of reach
    table.partition(0).put("c", window)
    records = list(table.drain())  # no offsets: no mark
    tiles = [
        tile_key("c", r, 30 * HOUR_MS // width)
        for r, (width, _) in enumerate(aggregator.resolutions)
    ]
    assert sorted((r.key, r.value is None) for r in records) == sorted(
        [(entry_key("c", event_hash("new")), False), (meta_key("c"), False)]
        + [(key, False) for key in tiles]
    )
    assert list(table.drain()) == []  # drained once


def test_idle_entities_are_evicted_past_the_retention_and_a_restore_forgets_them(
    payments: Domain, schema_store: SchemaStore
) -> None:
    """Ever-new cards, one every 10 minutes of event time for three days: the partition keeps
    only those with an event within the retention of its newest (plus a sweep's minute), and
    its changelog, read in order (tombstones and all), restores exactly those."""
    table = WindowTable(payments, payments.key_entity, schema_store, APP)
    aggregator = EntityAggregator(payments, "card")
    retention_ms = int(payments.retention.total_seconds() * 1000)
    step_ms, cards = 10 * 60_000, 3 * 24 * 6
    log: list[tuple[bytes, bytes | None]] = []
    windows = table.partition(0)
    for i in range(cards):
        window = EntityWindow()
        aggregator.add(window, f"e{i}", i * step_ms, {"amount": 1.0})
        windows.put(f"card-{i}", window)
        log += [(r.key, r.value) for r in table.drain({0: i + 1})]
        assert len(windows.windows) <= (retention_ms + SWEEP_EVERY_MS) // step_ms + 1
    newest = (cards - 1) * step_ms
    recent = {f"card-{i}" for i in range(cards) if i * step_ms >= newest - retention_ms}
    assert recent <= set(windows.windows)
    assert table.take_evicted() == cards - len(windows.windows) > cards // 2
    again = WindowTable(payments, payments.key_entity, schema_store, APP)
    again.restore(0, log, cards)
    assert set(again.partition(0).windows) == set(windows.windows)


def test_entry_records_are_avro_that_fastavro_reads(schema_store: SchemaStore) -> None:
    codec = EntryCodec(schema_store)
    schema = schema_store.current("window_entry")
    for time_ms, values in [(0, ()), (-5, (1.5,)), (1_767_312_000_123, (0.1, -2.0, 1e300))]:
        data = codec.encode(time_ms, values)
        assert data[:10] == b"\xc3\x01" + schema.fingerprint_bytes
        record = schemaless_reader(io.BytesIO(data[10:]), schema.parsed, None)
        assert record == {"event_time": time_ms, "values": list(values)}
        assert codec.decode(data) == (time_ms, values)


@pytest.mark.parametrize(("key", "event_id"), [("card-1", "e-1"), ("", "x"), ("ü\x00k", "")])
def test_changelog_keys_parse_back(key: str, event_id: str) -> None:
    id_hash = event_hash(event_id)
    assert parse_key(entry_key(key, id_hash)) == (b"e", key, id_hash, 0, 0)
    assert parse_key(tile_key(key, 2, -7)) == (b"t", key, 0, 2, -7)
    assert parse_key(tile_key(key, 0, 2**62)) == (b"t", key, 0, 0, 2**62)
    assert parse_key(meta_key(key)) == (b"m", key, 0, 0, 0)
    with pytest.raises(ValueError, match="not a window changelog key"):
        parse_key(entry_key(key, id_hash)[:-1])  # an id hash is 8 bytes
    with pytest.raises(ValueError, match="not a window changelog key"):
        parse_key(b"z" + key.encode())


def test_entry_records_in_another_writers_layout_decode_too(
    schema_store: SchemaStore,
) -> None:
    """Avro lets a writer split an array into blocks, which this encoder never does."""
    codec = EntryCodec(schema_store)
    header = codec.encode(0, ())[:10]
    double = struct.Struct("<d").pack
    two_blocks = header + long_bytes(42) + long_bytes(1) + double(1.5)
    two_blocks += long_bytes(1) + double(-3.0) + b"\x00"
    assert codec.decode(two_blocks) == (42, (1.5, -3.0))
    with pytest.raises(SerializationError):
        codec.decode(codec.encode(7, (1.0, 2.0))[:-5])  # truncated


class Run:
    """A featurizer's work on one partition, batch by batch, against an append-only changelog
    (``log``) and a committed source offset, as the broker keeps them."""

    def __init__(self, domain: Domain, schemas: SchemaStore, events: list[dict[str, Any]]) -> None:
        self.domain, self.schemas, self.events = domain, schemas, events
        self.aggregator = EntityAggregator(domain, "card")
        self.lateness = int(domain.allowed_lateness.total_seconds() * 1000)
        self.log: list[tuple[bytes, bytes | None]] = []
        self.committed: int | None = None
        self.features: dict[str, Any] = {}  # by event id, as last computed

    def start(self) -> WindowTable:
        table = WindowTable(self.domain, self.domain.key_entity, self.schemas, APP)
        table.restore(0, self.log, self.committed)
        return table

    def batch(self, table: WindowTable, end: int, *, commits: bool, leaks: float = 1.0) -> None:
        """Processes events from the committed offset to ``end``. A batch that does not commit
        leaves the first ``leaks`` share of its records in the log all the same."""
        windows = table.partition(0)
        for event in self.events[self.committed or 0 : end]:
            key = event["card_id"]
            window = windows.get(key) or EntityWindow()
            if window.has(event["event_id"]) or window.is_late(event["event_time"], self.lateness):
                continue
            args = (event["event_id"], event["event_time"], event)
            self.features[event["event_id"]] = self.aggregator.add(window, *args)
            windows.put(key, window)
        records = [(r.key, r.value) for r in table.drain({0: end})]
        if commits:
            self.log += records
            self.committed = end
        else:
            self.log += records[: int(len(records) * leaks)]


@pytest.mark.parametrize("seed", range(41, 53))
def test_a_restore_ignores_what_a_batch_that_never_committed_left_in_the_changelog(
    payments: Domain, schema_store: SchemaStore, make_stream: Any, seed: int
) -> None:
    """The embedded broker shows an aborted transaction's records to read_committed readers.
    Killed inside a batch, a featurizer leaves part of that batch's records; the restart must
    restore the state as of the committed batch, process the batch again to the same features,
    and leave a log that a later restore reads right too."""
    rng = random.Random(seed)
    events = make_stream(seed, n_cards=4)
    uninterrupted = Run(payments, schema_store, events)
    table = uninterrupted.start()
    for end in range(25, len(events) + 25, 25):
        uninterrupted.batch(table, min(end, len(events)), commits=True)

    run = Run(payments, schema_store, events)
    table = run.start()
    for crash in range(1, 3):
        while (run.committed or 0) < crash * len(events) // 3:
            run.batch(table, (run.committed or 0) + rng.randint(5, 40), commits=True)
        left = (run.committed or 0) + rng.randint(20, 60)
        run.batch(table, left, commits=False, leaks=rng.random())
        table = run.start()  # the restart
        assert snapshot(table) == restored_as_of(run, uninterrupted), "it counted uncommitted"
        # The batch processed again, in a smaller batch than the one that never committed,
        # then killed between two batches: what that batch left must still read right.
        run.batch(table, (run.committed or 0) + rng.randint(1, 10), commits=True)
        table = run.start()
        assert snapshot(table) == restored_as_of(run, uninterrupted), "leftovers came back"
    while (run.committed or 0) < len(events):
        run.batch(table, min((run.committed or 0) + rng.randint(5, 40), len(events)), commits=True)

    assert run.features == uninterrupted.features
    assert snapshot(run.start()) == snapshot(uninterrupted.start())


def restored_as_of(run: Run, uninterrupted: Run) -> list[Any]:
    """The windows an uninterrupted run had after the same events as ``run`` committed."""
    reference = Run(uninterrupted.domain, uninterrupted.schemas, uninterrupted.events)
    table = reference.start()
    if run.committed:
        reference.batch(table, run.committed, commits=True)
    return snapshot(table)


def snapshot(table: WindowTable) -> list[Any]:
    windows = table.partition(0).windows
    return sorted((k, state_of(w)) for k, w in windows.items())


def test_nothing_committed_restores_nothing_and_writes_over_what_was_left(
    payments: Domain, schema_store: SchemaStore, make_stream: Any
) -> None:
    run = Run(payments, schema_store, make_stream(5, n_cards=2))
    run.batch(run.start(), 30, commits=False)
    assert run.log, "the batch left nothing to test with"
    table = run.start()
    assert table.partition(0).windows == {}
    records = list(table.drain({0: 0}))
    assert {r.key for r in records[:-1]} == {k for k, _ in run.log if k != MARK}
    assert all(r.value is None for r in records[:-1])  # tombstones: nothing was committed
    assert records[-1].key == MARK


def test_a_changelog_without_the_committed_mark_is_refused(
    payments: Domain, schema_store: SchemaStore, make_stream: Any
) -> None:
    run = Run(payments, schema_store, make_stream(6, n_cards=2))
    run.batch(run.start(), 30, commits=True)
    run.committed = 31  # the group is past anything the changelog knows of
    with pytest.raises(StackError, match="no batch mark for the committed source offset 31"):
        run.start()
