"""Features of entities other than the event's key (payments: merchants).

The key entity's route forwards every accepted event, unchanged, to a topic partitioned by
the other entity, so each merchant's window lives in exactly one partition, whichever instance
owns it. The forwards are written in the same transaction as the state that accepted them. A
transaction that never committed can still leave forwards that readers see (the embedded
broker does not hide aborted records), and the batch is then processed again and forwards the
same events again. So a forward's key names its source: the entity key, then the partition and
offset of the event it forwards; forwards of one source partition arrive in offset order, and
the updater counts one only past the highest source offset it has counted (kept in the state,
see ``state.PartitionWindows.forwarded``). These features go to the online store only (the
per-event vector carries the key entity's), so they are computed once per entity and batch.
"""

from __future__ import annotations

import struct
import zlib

from services.core.declarations import Domain, Entity
from services.core.serde import Codec
from services.core.windows import EntityAggregator, EntityWindow
from services.featurizer.online import OnlineRow
from services.featurizer.processor import WindowStore

_SOURCE = struct.Struct(">IQ")  # source partition, source offset


def forward_key(entity_key: bytes, partition: int, offset: int) -> bytes:
    return entity_key + _SOURCE.pack(partition, offset)


def forward_source(key: bytes) -> tuple[int, int]:
    """(source partition, source offset) of a forward."""
    partition, offset = _SOURCE.unpack_from(key, len(key) - _SOURCE.size)
    return partition, offset


def forward_partition(entity_key: bytes, partitions: int) -> int:
    """The forward topic's partition of an entity: CRC-32 of its key, as librdkafka's default
    partitioner would pick from a key that is the entity key alone."""
    return zlib.crc32(entity_key) % partitions


class SecondaryUpdater:
    """Counts a forwarded event into its entity's window."""

    def __init__(self, domain: Domain, entity: Entity, codec: Codec) -> None:
        self._entity = entity
        self._codec = codec
        self._aggregator = EntityAggregator(domain, entity.name)
        self._event_id = domain.event_id_field
        self._event_time = domain.event_time_field

    def apply(self, value: bytes, store: WindowStore) -> str:
        """Counts the event in its entity's window; returns the entity's key."""
        event = self._codec.decode(value)  # validated by the key entity's route before forwarding
        key = str(event[self._entity.key_field])
        window = store.get(key) or EntityWindow()
        t = int(event[self._event_time])
        self._aggregator.count(window, str(event[self._event_id]), t, event)
        store.put(key, window)
        return key

    def online_row(self, key: str, window: EntityWindow) -> OnlineRow:
        """The entity's online row: its features as of its newest event."""
        newest = window.max_time
        assert newest is not None, "a window that counted an event"
        return OnlineRow(key, newest, self._aggregator.latest(window))
