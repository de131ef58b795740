"""The featurizer's state: each entity's windows, per owned partition, with a changelog.

A window table holds the windows of one domain's entity for the partitions this instance
owns. Every change is journalled as small records on the entity's compacted changelog topic
(one per accepted event, a tombstone when it leaves the window, one for the latest pruned time),
co-partitioned with the topic the entity is read from. The records go out in the same Kafka
transaction as the batch's outputs and consumed offsets, and each batch ends its records in a
partition with a mark naming the source offset it commits. A restart replays the changelog
partition, in offset order, up to the mark of the group's committed offset, before it processes
anything from the source partition.

Why the marks: the embedded broker writes an aborted transaction's abort marker but does not
list the transaction as aborted in its fetch answers, so a read_committed reader sees its
records (measured, docs/operations.md). A featurizer killed inside a transaction therefore
leaves records of a batch that never committed. The restore ignores what follows the committed
mark, and the next batch writes over it (``compensate``) so the log means the same again.

The same layout as faust's changelogged tables (compacted topic, co-partitioned, restored on
assignment), but each record is one window entry rather than the whole window: a busy
entity's window costs one small record per event, not a rewrite per batch.

The state is bounded by the domain's declared retention (the longest window plus the allowed
lateness): an entity's own events older than that are pruned as it gets new ones, and an
entity whose newest event is older than the retention before its partition's newest (an idle
card, a merchant gone) is evicted whole, its changelog records tombstoned, at most once a
minute of event time. Its next event is then its first: counts start at 0, as they would,
and seconds-since-last takes its declared fill.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

from services.core.declarations import Domain
from services.core.errors import StackError
from services.core.flatavro import long_bytes
from services.core.schemas import SchemaStore
from services.core.serde import SINGLE_OBJECT_MAGIC, SingleObjectCodec
from services.core.windows import EntityWindow

ENTRY = b"e"
META = b"m"
MARK = b"c"
ENTRY_SUBJECT = "window_entry"
MARK_SUBJECT = "changelog_mark"
_KEY_LENGTH_BYTES = 2
SWEEP_EVERY_MS = 60_000  # of a partition's event time between two sweeps for idle entities
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


class MarkCodec:
    """``schemas/changelog_mark.avsc`` records: one per partition and batch, so the shared
    codec's speed is enough."""

    def __init__(self, schemas: SchemaStore) -> None:
        self._codec = SingleObjectCodec(schemas.current(MARK_SUBJECT), schemas)

    def encode(self, next_source_offset: int, forwarded: dict[int, int]) -> bytes:
        pairs = [{"partition": p, "offset": o} for p, o in sorted(forwarded.items())]
        return self._codec.encode({"next_source_offset": next_source_offset, "forwarded": pairs})

    def decode(self, data: bytes) -> tuple[int, dict[int, int]]:
        record = self._codec.decode(data)
        forwarded = {int(f["partition"]): int(f["offset"]) for f in record["forwarded"]}
        return int(record["next_source_offset"]), forwarded


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
    if kind == MARK:
        return kind, "", ""
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
        # Forwarded events (secondary entities): per source partition, the highest source
        # offset counted. Forwards of one source partition arrive in offset order, so one
        # at or below it was sent again after a crash and is counted already.
        self.forwarded: dict[int, int] = {}
        self.uncommitted_keys: set[bytes] = set()  # found by a restore after the committed mark
        self.newest_ms = 0  # the newest event time among its entities' changes
        self.swept_ms = 0  # ``newest_ms`` at the last sweep for idle entities

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
        self._marks = MarkCodec(schemas)
        self._partitions: dict[int, PartitionWindows] = {}
        self._retention_ms = int(domain.retention.total_seconds() * 1000)
        self.evicted = 0  # idle entities evicted since the last ``take_evicted``

    @property
    def partitions(self) -> tuple[int, ...]:
        return tuple(sorted(self._partitions))

    def partition(self, number: int) -> PartitionWindows:
        """The windows of an owned partition (restore it first, or it starts empty)."""
        windows = self._partitions.get(number)
        if windows is None:
            windows = self._partitions[number] = PartitionWindows()
        return windows

    def restore(
        self, number: int, records: Sequence[tuple[bytes, bytes | None]], committed: int | None
    ) -> Restored:
        """Rebuilds a partition from its changelog records in offset order, as of the batch
        that committed source offset ``committed`` (None: nothing committed yet)."""
        cut, forwarded = self._committed_end(number, records, committed)
        entries: dict[str, dict[str, tuple[int, tuple[float, ...]] | None]] = {}
        pruned: dict[str, int] = {}
        for key, value in records[:cut]:
            kind, entity_key, event_id = parse_key(key)
            if kind == MARK:
                continue
            if kind == META:
                if value is None:  # written over what a batch that never committed left
                    pruned.pop(entity_key, None)
                else:
                    pruned[entity_key] = self._codec.decode(value)[0]
                continue
            # A tombstone leaves its key's place: where a batch that never committed had
            # pruned an entry, the next batch writes it back, and ties in event time keep
            # arrival order, the order of first records.
            events = entries.setdefault(entity_key, {})
            events[event_id] = None if value is None else self._codec.decode(value)
        windows = self.partition(number)
        windows.windows.clear()
        windows.changed.clear()
        windows.forwarded = forwarded
        windows.uncommitted_keys = {key for key, _ in records[cut:] if key[:1] != MARK}
        count = 0
        for entity_key in entries.keys() | pruned.keys():
            window = EntityWindow(pruned_latest=pruned.get(entity_key))
            for event_id, entry in entries.get(entity_key, {}).items():
                if entry is not None:
                    window.insert(event_id, *entry)  # dicts keep arrival order
                    count += 1
            if window.max_time is None and window.pruned_latest is None:
                continue  # evicted: every record of it is a tombstone
            windows.windows[entity_key] = window
            windows.newest_ms = max(windows.newest_ms, _newest(window))
        windows.swept_ms = windows.newest_ms
        return Restored(count, len(records) - cut)

    def _committed_end(
        self, number: int, records: Sequence[tuple[bytes, bytes | None]], committed: int | None
    ) -> tuple[int, dict[int, int]]:
        """Where the committed records end: just after the last mark of offset ``committed``
        (a batch that never committed marks a greater one), with that mark's forwards."""
        if committed is None:
            return 0, {}
        for i in range(len(records) - 1, -1, -1):
            key, value = records[i]
            if key == MARK and value is not None:
                next_offset, forwarded = self._marks.decode(value)
                if next_offset == committed:
                    return i + 1, forwarded
        raise StackError(
            f"{self.topic} [{number}] has no batch mark for the committed source offset "
            f"{committed}, so its state cannot be restored as of that offset ({len(records)} "
            "records read). The topic was recreated or written by a streamml without marks; "
            "start the featurizer under a new STREAMML_FEATURIZER_APP_ID to rebuild its state "
            "from the events"
        )

    def _mark(self, number: int, next_source_offset: int) -> ChangelogRecord:
        """The record that ends a batch's changes to a partition (see the module's doc)."""
        forwarded = self.partition(number).forwarded
        return ChangelogRecord(number, MARK, self._marks.encode(next_source_offset, forwarded))

    def take_evicted(self) -> int:
        taken, self.evicted = self.evicted, 0
        return taken

    def drop(self, number: int) -> None:
        """Forgets a partition this instance no longer owns."""
        self._partitions.pop(number, None)

    def drain(self, next_offsets: Mapping[int, int] | None = None) -> Iterator[ChangelogRecord]:
        """The changelog records of every change since the last drain. With ``next_offsets``
        (the source offsets a batch commits, by partition) each of those partitions' records
        end with its mark, and begin by writing over what a restore found past the committed
        mark."""
        marks = next_offsets or {}
        for number, windows in self._partitions.items():
            if windows.uncommitted_keys and number in marks:
                yield from self._compensate(number, windows)
            if windows.changed:
                yield from self._changes(number, windows)
            if windows.newest_ms - windows.swept_ms >= SWEEP_EVERY_MS:
                yield from self._evict_idle(number, windows)
        for number, offset in marks.items():
            yield self._mark(number, offset)

    def _evict_idle(self, number: int, windows: PartitionWindows) -> Iterator[ChangelogRecord]:
        """Forgets every entity whose newest event is older than the retention before the
        partition's newest, tombstoning its records so a restore forgets it too."""
        windows.swept_ms = windows.newest_ms
        horizon = windows.newest_ms - self._retention_ms
        idle = [key for key, window in windows.windows.items() if _newest(window) < horizon]
        for entity_key in idle:
            window = windows.windows.pop(entity_key)
            for event_id in window.event_ids:
                yield ChangelogRecord(number, entry_key(entity_key, event_id), None)
            if window.pruned_latest is not None:
                yield ChangelogRecord(number, meta_key(entity_key), None)
        self.evicted += len(idle)

    def _changes(self, number: int, windows: PartitionWindows) -> Iterator[ChangelogRecord]:
        encode = self._codec.encode
        for entity_key in windows.changed:
            window = windows.windows[entity_key]
            windows.newest_ms = max(windows.newest_ms, _newest(window))
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

    def _compensate(self, number: int, windows: PartitionWindows) -> Iterator[ChangelogRecord]:
        """Records that write the current value over each key a restore found after the
        committed mark, so that the log, read in order, means the windows again."""
        encode = self._codec.encode
        for key in sorted(windows.uncommitted_keys):
            kind, entity_key, event_id = parse_key(key)
            window = windows.windows.get(entity_key)
            value = None
            if window is not None and kind == META and window.pruned_latest is not None:
                value = encode(window.pruned_latest, ())
            elif window is not None and kind == ENTRY and event_id in window.event_ids:
                i = window.event_ids.index(event_id)
                value = encode(window.times[i], tuple(column[i] for column in window.columns))
            yield ChangelogRecord(number, key, value)
        windows.uncommitted_keys = set()


def _newest(window: EntityWindow) -> int:
    """The entity's newest event time (its window, else the latest it pruned)."""
    if window.max_time is not None:
        return window.max_time
    return window.pruned_latest if window.pruned_latest is not None else 0


class Restored(NamedTuple):
    entries: int  # window entries rebuilt
    ignored: int  # records after the committed mark: a transaction that never committed
