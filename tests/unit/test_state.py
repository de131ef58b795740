"""Window tables: the changelog records they emit restore exactly the windows they hold."""

from __future__ import annotations

import io
import struct
from typing import Any

import pytest
from fastavro import schemaless_reader

from services.core.declarations import Domain
from services.core.errors import SerializationError
from services.core.flatavro import long_bytes
from services.core.schemas import SchemaStore
from services.featurizer.state import EntryCodec, WindowTable, entry_key, meta_key, parse_key
from services.featurizer.windows import EntityAggregator, EntityWindow

HOUR_MS = 3_600_000
APP = "streamml-featurizer"


def compacted(log: dict[bytes, bytes], table: WindowTable) -> None:
    """Applies a drain to a dict the way log compaction keeps a key's latest record."""
    for record in table.drain():
        log.pop(record.key, None)
        if record.value is not None:
            log[record.key] = record.value


def restored(domain: Domain, schemas: SchemaStore, log: dict[bytes, bytes]) -> WindowTable:
    table = WindowTable(domain, domain.key_entity, schemas, APP)
    table.restore(0, list(log.items()))
    return table


def same(a: EntityWindow | None, b: EntityWindow | None) -> bool:
    assert a is not None and b is not None
    return (a.times, a.event_ids, a.columns, a.pruned_latest) == (
        b.times,
        b.event_ids,
        b.columns,
        b.pruned_latest,
    )


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
    aggregator.add(window, "new", 30 * HOUR_MS, {"amount": 2.0})  # prunes "old"
    table.partition(0).put("c", window)
    records = list(table.drain())
    assert [(r.key, r.value is None) for r in records] == [
        (entry_key("c", "new"), False),
        (meta_key("c"), False),
    ]
    assert list(table.drain()) == []  # drained once


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
    assert parse_key(entry_key(key, event_id)) == (b"e", key, event_id)
    assert parse_key(meta_key(key)) == (b"m", key, "")
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
