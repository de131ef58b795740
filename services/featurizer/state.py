"""The featurizer's state: each entity's windows, per owned partition, with a changelog.

A window table holds the windows of one domain's entity for the partitions this instance
owns (``services/core/windows.py``: tiles, and the events of the duplicate span). Every
change is journalled as small records on the entity's compacted changelog topic: one per tile
a batch changed (its statistics), one per recent event (its time, by its id's hash; a
tombstone when it leaves the duplicate span), one for the latest time that left it;
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
assignment), but each record is one tile or recent event rather than the whole window: a busy
entity costs a few small records per batch, not a rewrite of its state.

The state is bounded per entity by the tiles its windows and the lateness span, and the
events of its duplicate span; an entity whose newest event is older than the retention before
its partition's newest (an idle card, a merchant gone) is evicted whole, its changelog records
tombstoned, at most once a minute of event time. Its next event is then its first: counts
start at 0, as they would, and seconds-since-last takes its declared fill.
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
from services.core.windows import EntityWindow, Tiles

ENTRY = b"e"
TILE = b"t"
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


class ChangelogKey(NamedTuple):
    kind: bytes
    entity_key: str
    id_hash: int = 0  # an entry's
    resolution: int = 0  # a tile's
    number: int = 0  # a tile's


def _entity_part(kind: bytes, entity_key: str) -> bytes:
    encoded = entity_key.encode()
    return kind + len(encoded).to_bytes(_KEY_LENGTH_BYTES, "big") + encoded


def entry_key(entity_key: str, id_hash: int) -> bytes:
    """A recent event's record: its entity and its id's 64-bit hash."""
    return _entity_part(ENTRY, entity_key) + id_hash.to_bytes(8, "big", signed=True)


def tile_key(entity_key: str, resolution: int, number: int) -> bytes:
    """A tile's record: its entity, its resolution (the aggregator's index) and its number."""
    return (
        _entity_part(TILE, entity_key)
        + resolution.to_bytes(1, "big")
        + number.to_bytes(8, "big", signed=True)
    )


def meta_key(entity_key: str) -> bytes:
    return META + entity_key.encode()


def parse_key(key: bytes) -> ChangelogKey:
    kind = key[:1]
    if kind == MARK:
        return ChangelogKey(kind, "")
    if kind == META:
        return ChangelogKey(kind, key[1:].decode())
    if kind not in (ENTRY, TILE):
        raise ValueError(f"not a window changelog key: {key[:20]!r}")
    length = int.from_bytes(key[1 : 1 + _KEY_LENGTH_BYTES], "big")
    start = 1 + _KEY_LENGTH_BYTES
    entity_key = key[start : start + length].decode()
    rest = key[start + length :]
    if kind == ENTRY and len(rest) == 8:
        return ChangelogKey(kind, entity_key, id_hash=int.from_bytes(rest, "big", signed=True))
    if kind == TILE and len(rest) == 9:
        number = int.from_bytes(rest[1:], "big", signed=True)
        return ChangelogKey(kind, entity_key, resolution=rest[0], number=number)
    raise ValueError(f"not a window changelog key: {key[:40]!r}")


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
        self._key_entity = domain.key_entity
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
        found = _Found()
        for key, value in records[:cut]:
            if key != MARK:
                found.read(parse_key(key), None if value is None else self._codec.decode(value))
        windows = self.partition(number)
        windows.windows.clear()
        windows.changed.clear()
        windows.forwarded = forwarded
        windows.uncommitted_keys = {key for key, _ in records[cut:] if key[:1] != MARK}
        for entity_key, window in found.windows(checked=self.entity == self._key_entity):
            windows.windows[entity_key] = window
            windows.newest_ms = max(windows.newest_ms, _newest(window))
        windows.swept_ms = windows.newest_ms
        return Restored(found.tiles_kept, len(records) - cut)

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
            for id_hash in window.recent_ids:
                yield ChangelogRecord(number, entry_key(entity_key, id_hash), None)
            for resolution, tiles in window.tiles.items():
                for tile in tiles.numbers:
                    yield ChangelogRecord(number, tile_key(entity_key, resolution, tile), None)
            if window.pruned_latest is not None:
                yield ChangelogRecord(number, meta_key(entity_key), None)
        self.evicted += len(idle)

    def _changes(self, number: int, windows: PartitionWindows) -> Iterator[ChangelogRecord]:
        for entity_key in windows.changed:
            window = windows.windows[entity_key]
            windows.newest_ms = max(windows.newest_ms, _newest(window))
            encode = self._codec.encode
            for id_hash, time_ms in window.journal.items():
                if time_ms is None and id_hash in window.new_ids:
                    continue  # added and dropped since the last drain: never written
                value = None if time_ms is None else encode(time_ms, ())
                yield ChangelogRecord(number, entry_key(entity_key, id_hash), value)
            for resolution, tile in window.touched_tiles:
                value = self._tile_value(window, resolution, tile)
                if value is None and (resolution, tile) in window.new_tiles:
                    continue  # made and dropped since the last drain: never written
                yield ChangelogRecord(number, tile_key(entity_key, resolution, tile), value)
            if window.meta_changed:
                yield ChangelogRecord(number, meta_key(entity_key), self._meta_value(window))
            window.drained()
        windows.changed.clear()

    def _entry_value(self, window: EntityWindow, id_hash: int) -> bytes | None:
        time_ms = window.recent_time(id_hash)
        return None if time_ms is None else self._codec.encode(time_ms, ())

    def _tile_value(self, window: EntityWindow, resolution: int, tile: int) -> bytes | None:
        tiles = window.tiles.get(resolution)
        stats = None if tiles is None else tiles.get(tile)
        return None if stats is None else self._codec.encode(tile, stats)

    def _meta_value(self, window: EntityWindow) -> bytes | None:
        latest = window.pruned_latest
        return None if latest is None else self._codec.encode(latest, ())

    def _compensate(self, number: int, windows: PartitionWindows) -> Iterator[ChangelogRecord]:
        """Records that write the current value over each key a restore found after the
        committed mark, so that the log, read in order, means the windows again."""
        for key in sorted(windows.uncommitted_keys):
            parsed = parse_key(key)
            window = windows.windows.get(parsed.entity_key)
            value = None
            if window is not None and parsed.kind == META:
                value = self._meta_value(window)
            elif window is not None and parsed.kind == ENTRY:
                value = self._entry_value(window, parsed.id_hash)
            elif window is not None:
                value = self._tile_value(window, parsed.resolution, parsed.number)
            yield ChangelogRecord(number, key, value)
        windows.uncommitted_keys = set()


def _newest(window: EntityWindow) -> int:
    """The entity's newest event time."""
    return window.newest_ms if window.newest_ms is not None else 0


class _Found:
    """What a partition's committed changelog records say, key by key (the last record wins)."""

    def __init__(self) -> None:
        self.recent: dict[str, dict[int, int | None]] = {}
        self.tiles: dict[str, dict[tuple[int, int], tuple[float, ...] | None]] = {}
        self.pruned: dict[str, int | None] = {}
        self.tiles_kept = 0

    def read(self, key: ChangelogKey, value: tuple[int, tuple[float, ...]] | None) -> None:
        entity_key = key.entity_key
        if key.kind == META:
            self.pruned[entity_key] = None if value is None else value[0]
        elif key.kind == ENTRY:
            entries = self.recent.setdefault(entity_key, {})
            entries[key.id_hash] = None if value is None else value[0]
        elif key.kind == TILE:
            place = (key.resolution, key.number)
            self.tiles.setdefault(entity_key, {})[place] = None if value is None else value[1]

    def windows(self, *, checked: bool) -> Iterator[tuple[str, EntityWindow]]:
        """Each entity's window; none for an entity whose records are all tombstones.
        ``checked``: the entity's duplicates are checked (``EntityWindow.remember``)."""
        for entity_key in self.recent.keys() | self.tiles.keys() | self.pruned.keys():
            window = EntityWindow(pruned_latest=self.pruned.get(entity_key))
            for id_hash, time_ms in self.recent.get(entity_key, {}).items():
                if time_ms is not None:
                    window.remember(id_hash, time_ms, checked=checked)
            for (resolution, tile), stats in self.tiles.get(entity_key, {}).items():
                if stats is not None:
                    window.tiles.setdefault(resolution, Tiles(len(stats))).put(tile, stats)
                    self.tiles_kept += 1
            if window.newest_ms is None:
                window.newest_ms = window.pruned_latest
            if window.newest_ms is not None or window.tiles:
                yield entity_key, window


class Restored(NamedTuple):
    entries: int  # tiles rebuilt
    ignored: int  # records after the committed mark: a transaction that never committed
