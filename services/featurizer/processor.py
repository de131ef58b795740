"""One event in, one verdict out: a feature vector, a dead letter, or a counted duplicate.

Pure logic over a ``WindowStore``: the featurizer backs it with changelogged window tables
(``state.py``), tests with a dict. Nothing here talks to Kafka or Redis.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from services.core.deadletter import SourcePosition, dead_letter
from services.core.declarations import Domain
from services.core.errors import SerializationError
from services.core.serde import Codec, Record
from services.core.windows import EntityAggregator, EntityWindow, FeatureValues, event_hash

SERVICE = "featurizer"


class WindowStore(Protocol):
    def get(self, key: str) -> EntityWindow | None: ...

    def put(self, key: str, window: EntityWindow) -> None: ...


# Verdicts are built for every event: slots, not frozen (a frozen dataclass costs about three
# times as much to construct).
@dataclass(slots=True)
class Accepted:
    """An event counted in the state, with its vector. ``newest``: no accepted event of its
    entity is later, so its features are also the entity's latest (the online row)."""

    key: str
    event_time_ms: int
    vector: Record
    features: FeatureValues
    newest: bool = True


@dataclass(slots=True)
class Rejected:
    reason: str
    dead_letter: Record


@dataclass(slots=True)
class Duplicate:
    event_id: str


Verdict = Accepted | Rejected | Duplicate


class EventProcessor:
    """Decodes, checks and aggregates one domain's events, keyed by its key entity."""

    def __init__(
        self, domain: Domain, codec: Codec, clock_ms: Callable[[], int] | None = None
    ) -> None:
        self.domain = domain
        self._codec = codec
        self._aggregator = EntityAggregator(domain, domain.key_entity)
        self._clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self._lateness_ms = _ms(domain.allowed_lateness)
        self._future_ms = _ms(domain.max_future)
        self._past_ms = _ms(domain.max_past)
        self._key_field = domain.key_field
        self._event_id_field = domain.event_id_field
        self._time_field = domain.event_time_field
        # The vector: the event's id, time, entity keys and passthrough fields, then features.
        self._copied = tuple(
            dict.fromkeys(
                (
                    domain.event_id_field,
                    domain.event_time_field,
                    *(e.key_field for e in domain.entities),
                    *domain.passthrough,
                )
            )
        )
        self._vector_features = tuple(f.name for f in domain.vector_features)

    def process(
        self, key: bytes | None, value: bytes | None, source: SourcePosition, store: WindowStore
    ) -> Verdict:
        def reject(reason: str, detail: str) -> Rejected:
            letter = dead_letter(
                reason=reason,
                detail=detail,
                key=key,
                value=value,
                source=source,
                service=SERVICE,
                failed_at_ms=self._clock_ms(),
            )
            return Rejected(reason, letter)

        if value is None:
            return reject("undecodable", "the record has no value (a tombstone?)")
        try:
            event = self._codec.decode(value)
        except SerializationError as exc:
            return reject(exc.reason, str(exc))
        problem = self._check(event)
        if problem is not None:
            return reject("check_failed", problem)
        return self._aggregate(event, store, reject)

    def _check(self, event: Record) -> str | None:
        for check in self.domain.checks:
            value = event.get(check.field_name)
            if not check.passes(value):
                return f"{check.field_name}={value!r} fails: {check.rule}"
        t = event[self.domain.event_time_field]
        now = self._clock_ms()
        if t > now + self._future_ms:
            return (
                f"event_time {t} is more than {self.domain.max_future} ahead of the clock ({now})"
            )
        if t < now - self._past_ms:
            return f"event_time {t} is more than {self.domain.max_past} behind the clock ({now})"
        return None

    def _aggregate(
        self,
        event: Record,
        store: WindowStore,
        reject: Callable[[str, str], Rejected],
    ) -> Verdict:
        domain = self.domain
        key = str(event[self._key_field])
        event_id = str(event[self._event_id_field])
        t = int(event[self._time_field])
        window = store.get(key) or EntityWindow()
        id_hash = event_hash(event_id)  # once: the duplicate check and the state both key on it
        if window.has_hash(id_hash):
            return Duplicate(event_id)
        if window.is_late(t, self._lateness_ms):
            return reject(
                "late",
                f"event_time {t} is more than {domain.allowed_lateness} before the latest "
                f"accepted event time {window.max_time} of {domain.key_field}={key}",
            )
        newest = window.newest_ms is None or t >= window.newest_ms  # ties: arrival order
        features = self._aggregator.add(window, event_id, t, event, id_hash)
        store.put(key, window)
        return Accepted(key, t, self._vector(event, features), features, newest)

    def latest(self, window: EntityWindow) -> FeatureValues:
        """The entity's features as of its newest event (see ``EntityAggregator.latest``)."""
        return self._aggregator.latest(window)

    def _vector(self, event: Record, features: FeatureValues) -> Record:
        vector: dict[str, Any] = {name: event[name] for name in self._copied}
        for name in self._vector_features:
            vector[name] = features.get(name)
        return vector


def _ms(delta: timedelta) -> int:
    return math.floor(delta.total_seconds() * 1000)
