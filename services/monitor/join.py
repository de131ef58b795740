"""The join of a prediction with its outcome and the vector it scored, by event id.

One ``JoinTable`` per partition of the monitor's by-event topic, where every part of an event
(its prediction, its outcome, its feature vector) arrives keyed by the event id, in whatever
order the three source topics delivered them. An event is joined once it has all three; then
a *done* marker keeps later copies of any part from joining it again, until the time-to-live
has passed. An entry older than the TTL (in event time: the table's watermark is the latest
time it has seen) leaves the table: a prediction with no outcome is *unlabelled*, an outcome
with no prediction *unmatched*, and a prediction and outcome whose vector never came are
joined without it. Nothing stays forever, and the table never holds more than its declared
``max_entries``: past it, the oldest entries leave early, the same way, and are counted as
*evicted* (a stream whose outcomes lag more than the bound allows).

Every change is also a changelog change (``drain_changes``), written in the same transaction
as the batch's outputs and offsets, so ``restore`` rebuilds the table as of the last commit.
Pure logic: no Kafka here.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum


class Kind(StrEnum):
    PREDICTION = "prediction"
    OUTCOME = "outcome"
    FEATURES = "features"
    DONE = "done"  # the changelog's marker of a joined event
    WATERMARK = "watermark"  # the changelog's record of the table's watermark (event id "")


PARTS = (Kind.PREDICTION, Kind.OUTCOME, Kind.FEATURES)


@dataclass(frozen=True)
class Part:
    """One source record of an event: its bytes as served, and the time it stands at (the
    event time for a prediction or a vector, the record's timestamp for an outcome)."""

    event_id: str
    kind: Kind
    key: bytes | None
    value: bytes
    time_ms: int


@dataclass(frozen=True)
class Joined:
    prediction: Part
    outcome: Part
    features: Part | None  # None only when the TTL passed before the vector came


@dataclass
class _Entry:
    parts: dict[Kind, Part] = field(default_factory=dict)
    done_at_ms: int | None = None  # joined: the time the done marker stands at

    @property
    def time_ms(self) -> int:
        if self.done_at_ms is not None:
            return self.done_at_ms
        timed = [p.time_ms for k, p in self.parts.items() if k != Kind.OUTCOME]
        return min(timed) if timed else self.parts[Kind.OUTCOME].time_ms


@dataclass(frozen=True)
class Change:
    """One changelog record: ``part`` None is a tombstone of (event_id, kind)."""

    event_id: str
    kind: Kind
    part: Part | None


@dataclass
class Expired:
    unlabelled: int = 0  # predictions no outcome answered within the TTL
    unmatched: int = 0  # outcomes of no prediction within the TTL
    joined: list[Joined] = field(default_factory=list)  # prediction and outcome, no vector
    evicted: int = 0  # of the above, entries taken out within the TTL: the table was full

    def __iadd__(self, other: Expired) -> Expired:
        self.unlabelled += other.unlabelled
        self.unmatched += other.unmatched
        self.evicted += other.evicted
        self.joined += other.joined
        return self


class JoinTable:
    def __init__(self, ttl_ms: int, max_entries: int = 1_000_000) -> None:
        self._ttl_ms = ttl_ms
        self._max_entries = max_entries
        self._entries: dict[str, _Entry] = {}
        self._by_time: list[tuple[int, str]] = []  # (time, event id), stale items skipped
        self._changes: list[Change] = []
        self.watermark_ms = 0
        self._logged_watermark_ms = 0
        self.duplicates = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, part: Part) -> Joined | None:
        """Takes one part; returns the join it completes, if it completes one. A part the
        event already has, or any part of an event already joined, is counted as a duplicate
        and changes nothing."""
        self.watermark_ms = max(self.watermark_ms, part.time_ms)
        entry = self._entries.get(part.event_id)
        if entry is None:
            entry = self._entries[part.event_id] = _Entry()
        elif entry.done_at_ms is not None or part.kind in entry.parts:
            self.duplicates += 1
            return None
        entry.parts[part.kind] = part
        if len(entry.parts) < len(PARTS):
            self._changes.append(Change(part.event_id, part.kind, part))
            heapq.heappush(self._by_time, (entry.time_ms, part.event_id))
            return None
        joined = Joined(
            entry.parts[Kind.PREDICTION], entry.parts[Kind.OUTCOME], entry.parts[Kind.FEATURES]
        )
        self._mark_done(part.event_id, entry)
        return joined

    def expire(self) -> Expired:
        """Takes out every entry older than the watermark minus the TTL, then the oldest
        while more than ``max_entries`` are held."""
        expired = Expired()
        horizon = self.watermark_ms - self._ttl_ms
        while self._by_time and (
            self._by_time[0][0] < horizon or len(self._entries) > self._max_entries
        ):
            at, event_id = heapq.heappop(self._by_time)
            entry = self._entries.get(event_id)
            if entry is None or entry.time_ms != at:
                continue  # already gone, or pushed again with a later time
            if at >= horizon:
                expired.evicted += 1
            self._take_out(event_id, entry, expired)
        return expired

    def _take_out(self, event_id: str, entry: _Entry, expired: Expired) -> None:
        del self._entries[event_id]
        kinds = set(entry.parts) | ({Kind.DONE} if entry.done_at_ms is not None else set())
        self._changes += [Change(event_id, kind, None) for kind in sorted(kinds)]
        if entry.done_at_ms is not None:
            return
        prediction, outcome = entry.parts.get(Kind.PREDICTION), entry.parts.get(Kind.OUTCOME)
        if prediction is not None and outcome is not None:
            expired.joined.append(Joined(prediction, outcome, None))
        elif prediction is not None:
            expired.unlabelled += 1
        elif outcome is not None:
            expired.unmatched += 1

    def take_duplicates(self) -> int:
        """Duplicates counted since the last call."""
        counted, self.duplicates = self.duplicates, 0
        return counted

    def drain_changes(self) -> list[Change]:
        """The changelog records of everything since the last drain, in order."""
        changes, self._changes = self._changes, []
        if self.watermark_ms != self._logged_watermark_ms:
            self._logged_watermark_ms = self.watermark_ms
            mark = Part("", Kind.WATERMARK, None, b"", self.watermark_ms)
            changes.append(Change("", Kind.WATERMARK, mark))
        return changes

    def restore(self, changes: Iterable[Change]) -> None:
        """Rebuilds the table from its changelog, records in offset order (tombstones
        included; a compacted log may have dropped the records they replaced)."""
        self._entries.clear()
        self._by_time.clear()
        self._changes.clear()
        self.watermark_ms = 0
        for change in changes:
            self._replay(change)
        for event_id, entry in self._entries.items():
            if entry.done_at_ms is not None:
                entry.parts.clear()  # a joined event's parts were tombstoned with its marker
            self._by_time.append((entry.time_ms, event_id))
        heapq.heapify(self._by_time)
        self._logged_watermark_ms = self.watermark_ms

    def _replay(self, change: Change) -> None:
        if change.part is not None:
            self.watermark_ms = max(self.watermark_ms, change.part.time_ms)
        if change.kind == Kind.WATERMARK:
            return
        entry = self._entries.get(change.event_id)
        if change.part is None:
            if entry is not None:
                entry.parts.pop(change.kind, None)
                if change.kind == Kind.DONE:
                    entry.done_at_ms = None
                if not entry.parts and entry.done_at_ms is None:
                    del self._entries[change.event_id]
            return
        if entry is None:
            entry = self._entries[change.event_id] = _Entry()
        if change.kind == Kind.DONE:
            entry.done_at_ms = change.part.time_ms
        else:
            entry.parts[change.kind] = change.part

    def _mark_done(self, event_id: str, entry: _Entry) -> None:
        at = entry.time_ms
        marker = Part(event_id, Kind.DONE, None, b"", at)
        self._changes += [Change(event_id, kind, None) for kind in PARTS if kind in entry.parts]
        self._changes.append(Change(event_id, Kind.DONE, marker))
        entry.parts.clear()
        entry.done_at_ms = at
        heapq.heappush(self._by_time, (at, event_id))
