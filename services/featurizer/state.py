"""The featurizer's state: each entity's windows, per owned partition, with a changelog.

A window table holds the windows of one domain's entity for the partitions this instance
owns. Every change is journalled as small records on the entity's compacted changelog topic
(one per accepted event, a tombstone when it leaves the window, one for the latest pruned time),
co-partitioned with the topic the entity is read from. The records go out in the same Kafka
transaction as the batch's outputs and consumed offsets, so after a crash the changelog holds
exactly the state as of the last committed batch. A restart replays the changelog partition,
in offset order, before it processes anything from the source partition.

The same layout as faust's changelogged tables (compacted topic, co-partitioned, restored on
assignment), but each record is one window entry rather than the whole window: a busy
entity's window costs one small record per event, not a rewrite per batch.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from services.core.declarations import Domain
from services.core.flatavro import long_bytes
from services.core.schemas import SchemaStore
from services.core.serde import SINGLE_OBJECT_MAGIC, SingleObjectCodec
from services.featurizer.windows import EntityWindow

ENTRY = b"e"
META = b"m"
ENTRY_SUBJECT = "window_entry"
_KEY_LENGTH_BYTES = 2
_pack_doubles: dict[int, struct.Struct] = {}


class EntryCodec:
    """``schemas/window_entry.avsc`` records, always Avro single-object encoded (the topic is
    internal). Encoding is by hand, the schema being two fields: a long, then an array of
    doubles; decoding is the shared single-object codec's (flat, so generated), so a
    hand-encoding mistake cannot go unnoticed."""

    def __init__(self, schemas: SchemaStore) -> None:
        schema = schemas.current(ENTRY_SUBJECT)
        self._header = SINGLE_OBJECT_MAGIC + schema.fingerprint_bytes
        self._decoder = SingleObjectCodec(schema, schemas)

    def encode(self, time_ms: int, values: tuple[float, ...]) -> bytes:
        body = self._header + long_bytes(time_ms)
        if values:
            n = len(values)
            packer = _pack_doubles.get(n)
            if packer is None:
                packer = _pack_doubles[n] = struct.Struct(f"<{n}d")
            body += long_bytes(n) + packer.pack(*values)
        return body + b"\x00"  # the array's end

    def decode(self, data: bytes) -> tuple[int, tuple[float, ...]]:
        record = self._decoder.decode(data)
        return int(record["event_time"]), tuple(record["values"])


class ChangelogRecord(NamedTuple):
    partition: int
    key: bytes
    value: bytes | None  # None: a tombstone


def entry_key(entity_key: str, event_id: str) -> bytes:
    return entry_prefix(entity_key) + event_id.encode()


def entry_prefix(entity_key: str) -> bytes:
    """What every entry key of one entity starts with."""
    encoded = entity_key.encode()
    return ENTRY + len(encoded).to_bytes(_KEY_LENGTH_BYTES, "big") + encoded


def meta_key(entity_key: str) -> bytes:
    return META + entity_key.encode()


def parse_key(key: bytes) -> tuple[bytes, str, str]:
    """(kind, entity key, event id); the event id is empty for a meta record."""
    kind = key[:1]
    if kind == META:
        return kind, key[1:].decode(), ""
    if kind != ENTRY:
        raise ValueError(f"not a window changelog key: {key[:20]!r}")
    length = int.from_bytes(key[1 : 1 + _KEY_LENGTH_BYTES], "big")
    start = 1 + _KEY_LENGTH_BYTES
    return kind, key[start : start + length].decode(), key[start + length :].decode()


class PartitionWindows:
    """The windows of one partition, as the processor's WindowStore; remembers what changed."""

    def __init__(self) -> None:
        self.windows: dict[str, EntityWindow] = {}
        self.changed: set[str] = set()

    def get(self, key: str) -> EntityWindow | None:
        return self.windows.get(key)

    def put(self, key: str, window: EntityWindow) -> None:
        self.windows[key] = window
        self.changed.add(key)


class WindowTable:
    """One entity's windows over the partitions this instance owns."""

    def __init__(self, domain: Domain, entity: str, schemas: SchemaStore, app_id: str) -> None:
        self.topic = domain.topics.windows_changelog(app_id, entity)
        self.domain = domain.name
        self.entity = entity
        self._codec = EntryCodec(schemas)
        self._partitions: dict[int, PartitionWindows] = {}

    @property
    def partitions(self) -> tuple[int, ...]:
        return tuple(sorted(self._partitions))

    def partition(self, number: int) -> PartitionWindows:
        """The windows of an owned partition (restore it first, or it starts empty)."""
        windows = self._partitions.get(number)
        if windows is None:
            windows = self._partitions[number] = PartitionWindows()
        return windows

    def restore(self, number: int, records: Iterable[tuple[bytes, bytes | None]]) -> int:
        """Rebuilds a partition from its changelog records in offset order; returns entries."""
        entries: dict[str, dict[str, tuple[int, tuple[float, ...]]]] = {}
        pruned: dict[str, int] = {}
        for key, value in records:
            kind, entity_key, event_id = parse_key(key)
            if kind == META:
                if value is not None:
                    pruned[entity_key] = self._codec.decode(value)[0]
                continue
            events = entries.setdefault(entity_key, {})
            if value is None:
                events.pop(event_id, None)
            else:
                events[event_id] = self._codec.decode(value)
        windows = self.partition(number)
        windows.windows.clear()
        windows.changed.clear()
        count = 0
        for entity_key in entries.keys() | pruned.keys():
            window = EntityWindow(pruned_latest=pruned.get(entity_key))
            for event_id, (time_ms, values) in entries.get(entity_key, {}).items():
                window.insert(event_id, time_ms, values)  # dicts keep arrival order
                count += 1
            windows.windows[entity_key] = window
        return count

    def drop(self, number: int) -> None:
        """Forgets a partition this instance no longer owns."""
        self._partitions.pop(number, None)

    def drain(self) -> Iterator[ChangelogRecord]:
        """The changelog records of every change since the last drain."""
        encode = self._codec.encode
        for number, windows in self._partitions.items():
            for entity_key in windows.changed:
                window = windows.windows[entity_key]
                added, dropped = window.added, window.dropped
                gone = set(dropped) if dropped else ()
                prefix = entry_prefix(entity_key)
                for event_id, time_ms, values in added:
                    if event_id not in gone:
                        key = prefix + event_id.encode()
                        yield ChangelogRecord(number, key, encode(time_ms, values))
                if dropped:
                    new = {event_id for event_id, _, _ in added}
                    for event_id in dropped:
                        if event_id not in new:
                            yield ChangelogRecord(number, entry_key(entity_key, event_id), None)
                    if window.pruned_latest is not None:
                        value = encode(window.pruned_latest, ())
                        yield ChangelogRecord(number, meta_key(entity_key), value)
                    dropped.clear()
                added.clear()
            windows.changed.clear()
