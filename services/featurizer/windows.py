"""Exact event-time window arithmetic for one entity: the featurizer's pure core.

For an accepted event e with event time t, a windowed feature covers the entity's accepted
events that arrived up to and including e with event time in (t - W, t]. The state keeps only
what the longest window plus the allowed lateness can still reach, so it stays bounded.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.core.declarations import Aggregation, Domain, Feature

FeatureValues = dict[str, float | int | None]


@dataclass
class EntityWindow:
    """One entity's recent accepted events, sorted by event time (ties keep arrival order).

    Beside each event it keeps where the event was read (``origins``) and the features it was
    given (``emitted``): a replay after a crash is recognised by its origin and gets exactly
    the vector it got the first time, while a producer's retry (same id, another origin) is a
    duplicate.
    """

    times: list[int] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    values: list[tuple[float, ...]] = field(default_factory=list)
    origins: list[str | None] = field(default_factory=list)
    emitted: list[list[float | int | None]] = field(default_factory=list)
    max_time: int | None = None
    pruned_latest: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "t": self.times,
            "id": self.event_ids,
            "v": [list(v) for v in self.values],
            "o": self.origins,
            "f": self.emitted,
            "max": self.max_time,
            "pruned": self.pruned_latest,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EntityWindow:
        return cls(
            list(data["t"]),
            list(data["id"]),
            [tuple(v) for v in data["v"]],
            list(data["o"]),
            [list(f) for f in data["f"]],
            data["max"],
            data["pruned"],
        )

    def has(self, event_id: str) -> bool:
        return event_id in self.event_ids

    def first_seen(self, event_id: str) -> tuple[str | None, list[float | int | None]]:
        """Where an accepted event was read, and the feature values it was given then."""
        i = self.event_ids.index(event_id)
        return self.origins[i], self.emitted[i]

    def is_late(self, time_ms: int, lateness_ms: int) -> bool:
        return self.max_time is not None and time_ms < self.max_time - lateness_ms


class EntityAggregator:
    """Computes one entity's declared features; knows which event fields they read."""

    def __init__(self, domain: Domain, entity: str) -> None:
        self.features: tuple[Feature, ...] = domain.features_of(entity)
        self.source_fields = tuple(
            dict.fromkeys(f.source_field for f in self.features if f.source_field)
        )
        self._column = {name: i for i, name in enumerate(self.source_fields)}
        self._retention_ms = int(domain.retention.total_seconds() * 1000)

    def add(
        self,
        window: EntityWindow,
        event_id: str,
        time_ms: int,
        event: Mapping[str, Any],
        origin: str | None = None,
    ) -> FeatureValues:
        """Adds an accepted event and returns the entity's features as of that event."""
        position = bisect_right(window.times, time_ms)
        window.times.insert(position, time_ms)
        window.event_ids.insert(position, event_id)
        window.values.insert(position, tuple(float(event[f]) for f in self.source_fields))
        window.origins.insert(position, origin)
        result = {f.name: self._compute(f, window, position, time_ms) for f in self.features}
        window.emitted.insert(position, [result[f.name] for f in self.features])
        if window.max_time is None or time_ms > window.max_time:
            window.max_time = time_ms
        self._prune(window)
        return result

    def as_values(self, emitted: list[float | int | None]) -> FeatureValues:
        """The stored feature list of an event back as named values."""
        return {f.name: v for f, v in zip(self.features, emitted, strict=True)}

    def _compute(
        self, feature: Feature, window: EntityWindow, position: int, t: int
    ) -> float | int | None:
        if feature.aggregation is Aggregation.SECONDS_SINCE_LAST:
            previous = window.times[position - 1] if position > 0 else window.pruned_latest
            return None if previous is None else (t - previous) / 1000.0
        assert feature.window_ms is not None, f"{feature.name} needs a window"
        low = bisect_right(window.times, t - feature.window_ms)
        high = position + 1
        if feature.aggregation is Aggregation.COUNT:
            return high - low
        assert feature.source_field is not None, f"{feature.name} needs a source field"
        column = self._column[feature.source_field]
        items = [window.values[i][column] for i in range(low, high)]
        if feature.aggregation is Aggregation.SUM:
            return float(sum(items))
        if feature.aggregation is Aggregation.MEAN:
            return float(sum(items) / len(items))
        return float(max(items))

    def _prune(self, window: EntityWindow) -> None:
        assert window.max_time is not None
        cut = bisect_left(window.times, window.max_time - self._retention_ms + 1)
        if cut:
            window.pruned_latest = max(
                window.pruned_latest or window.times[cut - 1], window.times[cut - 1]
            )
            del window.times[:cut], window.event_ids[:cut], window.values[:cut]
            del window.origins[:cut], window.emitted[:cut]
