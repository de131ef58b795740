"""A source record of the monitor read as a part of an event, or refused with a reason.

Predictions and feature vectors come from streamml's own services; outcomes come from the team
that learns the truth, so an outcome is checked: it decodes with a schema of the domain's
outcomes subject, names the event (the domain's event id field, non-empty) and carries the
domain's label as a boolean. The part keeps the record's bytes unchanged: the labelled record
holds the vector and the prediction as they were served.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.core.declarations import Domain
from services.core.errors import SerializationError
from services.core.serde import Codec, CodecFactory, Record
from services.monitor.join import Kind, Part

MALFORMED = "malformed"
INVALID_OUTCOME = "invalid_outcome"


@dataclass(frozen=True)
class Refused:
    reason: str
    detail: str


class PartReader:
    """Reads the domain's predictions, outcomes and feature vectors as parts."""

    def __init__(self, domain: Domain, codecs: CodecFactory) -> None:
        topics = domain.topics
        self._domain = domain
        self._kinds: dict[str, tuple[Kind, Codec]] = {
            topics.predictions: (Kind.PREDICTION, codecs.for_topic(topics.predictions)),
            topics.outcomes: (Kind.OUTCOME, codecs.for_topic(topics.outcomes)),
            topics.features: (Kind.FEATURES, codecs.for_topic(topics.features)),
        }

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(self._kinds)

    def read(
        self, topic: str, key: bytes | None, value: bytes | None, timestamp_ms: int
    ) -> Part | Refused:
        kind, codec = self._kinds[topic]
        if value is None:
            return Refused(MALFORMED, "a record with no value (a tombstone?)")
        try:
            record = codec.decode(value)
        except SerializationError as exc:  # undecodable, unknown_schema or malformed
            return Refused(exc.reason, str(exc))
        if kind == Kind.OUTCOME:
            return self._outcome(record, key, value, timestamp_ms)
        domain = self._domain
        if kind == Kind.PREDICTION:
            event_id, event_time = record["event_id"], record["event_time"]
        else:
            event_id, event_time = record[domain.event_id_field], record[domain.event_time_field]
        return Part(str(event_id), kind, key, value, int(event_time))

    def decode(self, part: Part) -> Record:
        """The part's record (a part is only ever made of a record that decodes)."""
        return self._kinds[self._topic_of(part.kind)][1].decode(part.value)

    def _outcome(
        self, record: Record, key: bytes | None, value: bytes, timestamp_ms: int
    ) -> Part | Refused:
        id_field, label_field = self._domain.event_id_field, self._domain.label_field
        event_id: Any = record.get(id_field)
        if not isinstance(event_id, str) or not event_id:
            return Refused(INVALID_OUTCOME, f"{id_field} is {event_id!r}: it names no event")
        label: Any = record.get(label_field)
        if not isinstance(label, bool):
            return Refused(INVALID_OUTCOME, f"{label_field} is {label!r}, not a boolean")
        return Part(event_id, Kind.OUTCOME, key, value, timestamp_ms)

    def _topic_of(self, kind: Kind) -> str:
        return next(t for t, (k, _) in self._kinds.items() if k == kind)
