"""Features of entities other than the event's key (payments: merchants).

The card-keyed agent forwards every accepted event, unchanged, to a topic keyed by the other
entity, so each merchant's window lives in exactly one partition, whichever instance owns it.
These features go to the online store only; the per-event vector carries the key entity's.
"""

from __future__ import annotations

from services.core.declarations import Domain, Entity
from services.core.serde import Codec
from services.featurizer.online import OnlineRow
from services.featurizer.processor import WindowStore
from services.featurizer.windows import EntityAggregator, EntityWindow


class SecondaryUpdater:
    """Counts a forwarded event once into its entity's window; a replay or retry changes nothing."""

    def __init__(self, domain: Domain, entity: Entity, codec: Codec) -> None:
        self._domain = domain
        self._entity = entity
        self._codec = codec
        self._aggregator = EntityAggregator(domain, entity.name)

    def apply(self, value: bytes, store: WindowStore) -> OnlineRow | None:
        """The entity's online row after this event, or None when it was counted already."""
        domain = self._domain
        event = self._codec.decode(value)  # validated by the key entity's agent before forwarding
        key = str(event[self._entity.key_field])
        event_id = str(event[domain.event_id_field])
        window = store.get(key) or EntityWindow()
        if window.has(event_id):
            return None
        t = int(event[domain.event_time_field])
        features = self._aggregator.add(window, event_id, t, event)
        store.put(key, window)
        return OnlineRow(self._entity.key_field, key, t, features)
