"""Features of entities other than the event's key (payments: merchants).

The key entity's route forwards every accepted event, unchanged, to a topic keyed by the
other entity, so each merchant's window lives in exactly one partition, whichever instance
owns it. The forwards are written in the same transaction as the state that accepted them,
so each reaches this updater exactly once. These features go to the online store only (the
per-event vector carries the key entity's), so they are computed once per entity and batch.
"""

from __future__ import annotations

from services.core.declarations import Domain, Entity
from services.core.serde import Codec
from services.featurizer.online import OnlineRow
from services.featurizer.processor import WindowStore
from services.featurizer.windows import EntityAggregator, EntityWindow


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
        return OnlineRow(key, window.times[-1], self._aggregator.latest(window))
