"""One event in, one verdict out: a feature vector, a dead letter, or a counted duplicate.

Pure logic over a ``WindowStore``: the faust app backs it with changelogged tables, tests
with a dict. Nothing here talks to Kafka or Redis.
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
from services.featurizer.windows import EntityAggregator, EntityWindow, FeatureValues

SERVICE = "featurizer"


class WindowStore(Protocol):
    def get(self, key: str) -> EntityWindow | None: ...

    def put(self, key: str, window: EntityWindow) -> None: ...


@dataclass(frozen=True, slots=True)
class Accepted:
    """An event counted in the state, with its vector. ``replayed``: counted before a crash,
    read again from the same offset; the vector is the one it got the first time."""

    key: str
    event_time_ms: int
    vector: Record
    features: FeatureValues
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    dead_letter: Record


@dataclass(frozen=True, slots=True)
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
        return self._aggregate(event, f"{source.partition}:{source.offset}", store, reject)

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
        origin: str,
        store: WindowStore,
        reject: Callable[[str, str], Rejected],
    ) -> Verdict:
        domain = self.domain
        key = str(event[domain.key_field])
        event_id = str(event[domain.event_id_field])
        t = int(event[domain.event_time_field])
        window = store.get(key) or EntityWindow()
        if window.has(event_id):
            first_origin, emitted = window.first_seen(event_id)
            if first_origin != origin:
                return Duplicate(event_id)
            features = self._aggregator.as_values(emitted)
            return Accepted(key, t, self._vector(event, features), features, replayed=True)
        if window.is_late(t, self._lateness_ms):
            return reject(
                "late",
                f"event_time {t} is more than {domain.allowed_lateness} before the latest "
                f"accepted event time {window.max_time} of {domain.key_field}={key}",
            )
        features = self._aggregator.add(window, event_id, t, event, origin)
        store.put(key, window)
        return Accepted(key, t, self._vector(event, features), features)

    def _vector(self, event: Record, features: FeatureValues) -> Record:
        domain = self.domain
        vector: dict[str, Any] = {
            domain.event_id_field: event[domain.event_id_field],
            domain.event_time_field: event[domain.event_time_field],
        }
        for entity in domain.entities:
            vector[entity.key_field] = event[entity.key_field]
        for name in domain.passthrough:
            vector[name] = event[name]
        for feature in domain.vector_features:
            if feature.name in features:
                vector[feature.name] = features[feature.name]
        return vector


def _ms(delta: timedelta) -> int:
    return math.floor(delta.total_seconds() * 1000)
