"""The join of a prediction with its outcome and the vector it scored, by event id.

One ``JoinTable`` per partition of the monitor's by-event topic, where every part of an event
(its prediction, its outcome, its feature vector) arrives keyed by the event id, in whatever
order the three source topics delivered them. An event is joined once it has all three; then a
*done* marker keeps later copies of any part from joining it again, for ``done_ttl`` (5 minutes
of event time by default: as long as a producer retries a record; a copy of one part that comes
later waits alone and is counted as unlabelled or unmatched, it cannot join twice without its
other parts coming again too). An entry older than the TTL (in event time: the table's watermark
is the latest time it has seen) leaves the table: a prediction with no outcome is *unlabelled*,
an outcome with no prediction *unmatched*, and a prediction and outcome whose vector never came
are joined without it. Nothing stays forever, and the table never holds more than its declared
``max_entries``: past it, the oldest entries leave early, the same way, and are counted as
*evicted* (a stream whose outcomes lag more than the bound allows).

Every change is also a changelog change (``drain_changes``), written in the same transaction as
the batch's outputs and offsets, so ``restore`` rebuilds the table as of the last commit. Pure
logic: no Kafka here.
"""

from __future__ import annotations

import heapq
from collections import deque
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
    """An event not joined yet: the parts that came."""

    parts: dict[Kind, Part] = field(default_factory=dict)

    @property
    def time_ms(self) -> int:
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
    def __init__(
        self, ttl_ms: int, max_entries: int = 1_000_000, done_ttl_ms: int | None = None
    ) -> None:
        self._ttl_ms = ttl_ms
        self._done_ttl_ms = ttl_ms if done_ttl_ms is None else min(done_ttl_ms, ttl_ms)
        self._max_entries = max_entries
        self._entries: dict[str, _Entry] = {}  # events waiting for a part
        self._by_time: list[tuple[int, str]] = []  # (time, event id), stale items skipped
        self._done: dict[str, int] = {}  # joined events: the time their marker stands at
        self._done_order: deque[tuple[int, str]] = deque()  # as marked
        self._changes: list[Change] = []
        self.watermark_ms = 0
        self._logged_watermark_ms = 0
        self.duplicates = 0

    def __len__(self) -> int:
        return len(self._entries) + len(self._done)

    def add(self, part: Part) -> Joined | None:
        """Takes one part; returns the join it completes, if it completes one. A part the
        event already has, or any part of an event already joined, is counted as a duplicate
        and changes nothing."""
        self.watermark_ms = max(self.watermark_ms, part.time_ms)
        if part.event_id in self._done:
            self.duplicates += 1
            return None
        entry = self._entries.get(part.event_id)
        if entry is None:
            entry = self._entries[part.event_id] = _Entry()
        elif part.kind in entry.parts:
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
        """Takes out every waiting entry older than the watermark minus the TTL and every done
        marker older than the watermark minus ``done_ttl``, then the oldest of either while
        more than ``max_entries`` are held."""
        expired = Expired()
        horizon = self.watermark_ms - self._ttl_ms
        done_horizon = self.watermark_ms - self._done_ttl_ms
        while self._done_order and self._done_order[0][0] < done_horizon:
            self._forget_done(*self._done_order.popleft())
        while True:
            waiting = self._oldest_waiting()
            if waiting is None or waiting[0] >= horizon:
                break
            self._take_out(waiting[1], expired)
        while len(self) > self._max_entries:
            waiting = self._oldest_waiting()
            done = self._done_order[0] if self._done_order else None
            if done is not None and (waiting is None or done[0] <= waiting[0]):
                self._done_order.popleft()
                expired.evicted += self._forget_done(*done)
            elif waiting is not None:
                expired.evicted += 1
                self._take_out(waiting[1], expired)
            else:
                break
        self._compact_heap()
        return expired

    def _oldest_waiting(self) -> tuple[int, str] | None:
        """The (time, event id) of the oldest waiting entry, stale heap items dropped."""
        while self._by_time:
            at, event_id = self._by_time[0]
            entry = self._entries.get(event_id)
            if entry is not None and entry.time_ms == at:
                return at, event_id
            heapq.heappop(self._by_time)  # joined or gone, or pushed again with a later time
        return None

    def _compact_heap(self) -> None:
        """Rebuilds the time heap when stale items (events joined since) outnumber the live:
        each part pushed one, and a joined event's stay until they reach the top."""
        if len(self._by_time) > 2 * len(self._entries) + 1_024:
            self._by_time = [(entry.time_ms, key) for key, entry in self._entries.items()]
            heapq.heapify(self._by_time)

    def _forget_done(self, at: int, event_id: str) -> int:
        """Drops a done marker (1), unless it was dropped already (0)."""
        if self._done.get(event_id) != at:
            return 0
        del self._done[event_id]
        self._changes.append(Change(event_id, Kind.DONE, None))
        return 1

    def _take_out(self, event_id: str, expired: Expired) -> None:
        heapq.heappop(self._by_time)
        entry = self._entries.pop(event_id)
        self._changes += [Change(event_id, kind, None) for kind in sorted(entry.parts)]
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
        self._done.clear()
        self._changes.clear()
        self.watermark_ms = 0
        for change in changes:
            self._replay(change)
        for event_id in self._done:
            self._entries.pop(event_id, None)  # a joined event's parts were tombstoned
        self._by_time = [(entry.time_ms, key) for key, entry in self._entries.items()]
        heapq.heapify(self._by_time)
        self._done_order = deque(sorted((at, key) for key, at in self._done.items()))
        self._logged_watermark_ms = self.watermark_ms

    def _replay(self, change: Change) -> None:
        if change.part is not None:
            self.watermark_ms = max(self.watermark_ms, change.part.time_ms)
        if change.kind == Kind.WATERMARK:
            return
        if change.kind == Kind.DONE:
            if change.part is None:
                self._done.pop(change.event_id, None)
            else:
                self._done[change.event_id] = change.part.time_ms
            return
        entry = self._entries.get(change.event_id)
        if change.part is None:
            if entry is not None:
                entry.parts.pop(change.kind, None)
                if not entry.parts:
                    del self._entries[change.event_id]
            return
        if entry is None:
            entry = self._entries[change.event_id] = _Entry()
        entry.parts[change.kind] = change.part

    def _mark_done(self, event_id: str, entry: _Entry) -> None:
        at = entry.time_ms
        marker = Part(event_id, Kind.DONE, None, b"", at)
        self._changes += [Change(event_id, kind, None) for kind in PARTS if kind in entry.parts]
        self._changes.append(Change(event_id, Kind.DONE, marker))
        del self._entries[event_id]
        self._done[event_id] = at
        self._done_order.append((at, event_id))
