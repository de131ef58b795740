"""Tiled event-time windows for one entity: the featurizer's pure core.

A feature with window W counts events by tile: time is cut into tiles of width
w = ceil(W / TILES_PER_WINDOW), and for an accepted event e with event time t the feature covers
the entity's accepted events that arrived up to and including e whose tile is one of the
``TILES_PER_WINDOW`` tiles ending with t's own, that is event time in
[(floor(t / w) - TILES_PER_WINDOW + 1) * w, (floor(t / w) + 1) * w): between W - w and W
before t, and the arrived events of t's tile after it. An entity keeps per tile a count and
the sums and maxima its features need, never its events, so its state is bounded by the number
of tiles a window and the allowed lateness span, whatever the rate: the bound that lets a
featurizer run for days at thousands of events a second (docs/benchmarks.md, "A long run").
The same tiling as the hops of Chronon's and Tecton's sliding windows.

Besides the tiles, an entity keeps the times and 64-bit id hashes of its events of the last
``duplicate_span`` (the domain's; 5 minutes by default): an event whose id is among them is a
duplicate, and seconds-since-last reads the previous event time there. A duplicate that arrives
after its original left that span is counted again.
"""

from __future__ import annotations

import hashlib
import math
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, NamedTuple

from services.core.declarations import Aggregation, Domain, Feature

FeatureValues = dict[str, float | int | None]
TILES_PER_WINDOW = 12  # a window's far edge is exact to 1/12 of its length


def event_hash(event_id: str) -> int:
    """A stable 64-bit id for duplicate checks and changelog keys (Python's ``hash`` of a
    string changes from process to process)."""
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Tiles:
    """One resolution's tiles of an entity: sorted tile numbers, and ``stride`` statistics per
    tile in one flat array (a count, then sums, then maxima, as the layout says)."""

    __slots__ = ("numbers", "stats", "stride")

    def __init__(self, stride: int) -> None:
        self.numbers = array("q")
        self.stats = array("d")
        self.stride = stride

    def __len__(self) -> int:
        return len(self.numbers)

    def get(self, number: int) -> tuple[float, ...] | None:
        i = bisect_left(self.numbers, number)
        if i == len(self.numbers) or self.numbers[i] != number:
            return None
        s = self.stride
        return tuple(self.stats[i * s : (i + 1) * s])

    def put(self, number: int, stats: tuple[float, ...]) -> None:
        """Sets a tile's statistics (a restore)."""
        if len(stats) != self.stride:
            raise ValueError(f"a tile of {self.stride} statistics, not {len(stats)}")
        i = bisect_left(self.numbers, number)
        s = self.stride
        if i < len(self.numbers) and self.numbers[i] == number:
            self.stats[i * s : (i + 1) * s] = array("d", stats)
        else:
            self.numbers.insert(i, number)
            self.stats[i * s : i * s] = array("d", stats)

    def prune_below(self, number: int) -> array[int]:
        """Forgets tiles numbered below ``number``; returns their numbers."""
        cut = bisect_left(self.numbers, number)
        gone = self.numbers[:cut]
        if cut:
            del self.numbers[:cut]
            del self.stats[: cut * self.stride]
        return gone


@dataclass(eq=False)
class EntityWindow:
    """One entity's state: its tiles per resolution, the events of its duplicate span
    (times ascending, ties in arrival order, with their id hashes; for the key entity, whose
    duplicates are checked, also a set of the hashes), its newest event time.

    ``journal`` (recent events: id hash to time, None once dropped), ``touched_tiles`` and
    ``meta_changed`` say what changed since the state layer last drained them, so the
    changelog carries one record per change, never the whole state."""

    tiles: dict[int, Tiles] = field(default_factory=dict)
    # The recent events are times[first:] and ids[first:]: dropping the oldest moves
    # ``first``, and the arrays are compacted when half of them is dropped (a busy entity
    # would otherwise move its whole span in memory for each event).
    times: array[int] = field(default_factory=lambda: array("q"))
    ids: array[int] = field(default_factory=lambda: array("q"))
    first: int = 0
    checked_ids: set[int] = field(default_factory=set, repr=False)
    newest_ms: int | None = None
    pruned_latest: int | None = None  # the latest event time that left the duplicate span
    journal: dict[int, int | None] = field(default_factory=dict, repr=False)
    new_ids: set[int] = field(default_factory=set, repr=False)  # journalled, with no record yet
    touched_tiles: set[tuple[int, int]] = field(default_factory=set, repr=False)
    new_tiles: set[tuple[int, int]] = field(default_factory=set, repr=False)  # no record yet
    meta_changed: bool = field(default=False, repr=False)

    @property
    def max_time(self) -> int | None:
        """The greatest accepted event time."""
        return self.newest_ms

    @property
    def recent_times(self) -> array[int]:
        return self.times[self.first :]

    @property
    def recent_ids(self) -> array[int]:
        return self.ids[self.first :]

    def has(self, event_id: str) -> bool:
        """Whether an event of this id is in the duplicate span (key entities only)."""
        return self.has_hash(event_hash(event_id))

    def has_hash(self, id_hash: int) -> bool:
        return id_hash in self.checked_ids

    def is_late(self, time_ms: int, lateness_ms: int) -> bool:
        return self.newest_ms is not None and time_ms < self.newest_ms - lateness_ms

    def drained(self) -> None:
        """Its changes are in the changelog."""
        self.journal.clear()
        self.new_ids.clear()
        self.touched_tiles.clear()
        self.new_tiles.clear()
        self.meta_changed = False

    def recent_time(self, id_hash: int) -> int | None:
        """The event time of a recent event, by id hash (None: not recent). A scan: for
        a restart's few compensating records, not for every event."""
        try:
            return self.times[self.ids.index(id_hash, self.first)]
        except ValueError:
            return None

    def remember(self, id_hash: int, time_ms: int, *, checked: bool) -> None:
        """Adds a recent event (a restore, or the aggregator's add); ``checked``: keep its
        hash for duplicate checks."""
        i = bisect_right(self.times, time_ms, self.first)
        self.times.insert(i, time_ms)
        self.ids.insert(i, id_hash)
        if checked:
            self.checked_ids.add(id_hash)
        if self.newest_ms is None or time_ms > self.newest_ms:
            self.newest_ms = time_ms

    def previous_time(self, time_ms: int) -> int | None:
        """The latest event time at or before ``time_ms`` among the recent events, else the
        latest that left them if it is not later; None when neither is known."""
        i = bisect_right(self.times, time_ms, self.first)
        if i > self.first:
            return self.times[i - 1]
        pruned = self.pruned_latest
        return pruned if pruned is not None and pruned <= time_ms else None


class Resolution(NamedTuple):
    """The tiles of one window length: their width, and how many below the newest's are kept."""

    width_ms: int
    keep_tiles: int  # tiles kept below the newest's: a window, plus the lateness


@dataclass(frozen=True)
class _Step:
    """What computing one feature needs, looked up once instead of per event."""

    name: str
    aggregation: Aggregation
    resolution: int  # -1: seconds since last
    stat: int  # the statistic's place in a tile (0: the count)


class EntityAggregator:
    """Computes one entity's declared features; knows which event fields they read and the
    tile layout (per resolution: a count, then a sum per summed field, then a max per maxed
    field)."""

    def __init__(self, domain: Domain, entity: str) -> None:
        self.features: tuple[Feature, ...] = domain.features_of(entity)
        # Duplicates of the key entity's events are dropped by id; another entity's events
        # are forwarded, and a forward sent again is known by its source offset.
        self.checks_duplicates = entity == domain.key_entity
        self.source_fields = tuple(
            dict.fromkeys(f.source_field for f in self.features if f.source_field)
        )
        self._values = _values_reader(self.source_fields)
        self._duplicate_span_ms = int(domain.duplicate_span.total_seconds() * 1000)
        self._lateness_ms = int(domain.allowed_lateness.total_seconds() * 1000)
        windows = sorted({f.window_ms for f in self.features if f.window_ms is not None})
        self.resolutions = tuple(self._resolution(w) for w in windows)
        # Per resolution: (source column, statistic place) of its sums, then of its maxima.
        self._sums: list[list[tuple[int, int]]] = []
        self._maxima: list[list[tuple[int, int]]] = []
        self._plan = self._layout(windows)

    def _resolution(self, window_ms: int) -> Resolution:
        width = math.ceil(window_ms / TILES_PER_WINDOW)
        return Resolution(width, TILES_PER_WINDOW + math.ceil(self._lateness_ms / width))

    def _layout(self, windows: list[int]) -> tuple[_Step, ...]:
        column = {name: i for i, name in enumerate(self.source_fields)}
        summed: list[dict[str, None]] = [{} for _ in windows]
        maxed: list[dict[str, None]] = [{} for _ in windows]
        for f in self.features:
            if f.window_ms is not None and f.source_field is not None:
                r = windows.index(f.window_ms)
                (maxed if f.aggregation is Aggregation.MAX else summed)[r][f.source_field] = None
        for r in range(len(windows)):
            sums, maxima = list(summed[r]), list(maxed[r])
            self._sums.append([(column[n], 1 + i) for i, n in enumerate(sums)])
            self._maxima.append([(column[n], 1 + len(sums) + i) for i, n in enumerate(maxima)])
        plan = []
        for f in self.features:
            if f.aggregation is Aggregation.SECONDS_SINCE_LAST:
                plan.append(_Step(f.name, f.aggregation, -1, 0))
                continue
            assert f.window_ms is not None, f"{f.name} needs a window"
            r = windows.index(f.window_ms)
            stat = 0
            if f.aggregation is not Aggregation.COUNT:
                assert f.source_field is not None, f"{f.name} needs a source field"
                places = self._maxima[r] if f.aggregation is Aggregation.MAX else self._sums[r]
                stat = dict(places)[column[f.source_field]]
            plan.append(_Step(f.name, f.aggregation, r, stat))
        return tuple(plan)

    def stride(self, resolution: int) -> int:
        return 1 + len(self._sums[resolution]) + len(self._maxima[resolution])

    def add(
        self,
        window: EntityWindow,
        event_id: str,
        time_ms: int,
        event: Mapping[str, Any],
        id_hash: int | None = None,
    ) -> FeatureValues:
        """Adds an accepted event and returns the entity's features as of that event
        (``id_hash``: its ``event_hash``, when the caller has it already)."""
        previous = window.previous_time(time_ms)
        self.count(window, event_id, time_ms, event, id_hash)
        return self.features_at(window, time_ms, previous)

    def count(
        self,
        window: EntityWindow,
        event_id: str,
        time_ms: int,
        event: Mapping[str, Any],
        id_hash: int | None = None,
    ) -> None:
        """Adds an accepted event without computing its own features (see ``latest``)."""
        values = self._values(event)
        if id_hash is None:
            id_hash = event_hash(event_id)
        window.remember(id_hash, time_ms, checked=self.checks_duplicates)
        if id_hash not in window.journal:  # else dropped since: its record is live
            window.new_ids.add(id_hash)
        window.journal[id_hash] = time_ms
        newest = window.newest_ms
        assert newest is not None
        for r, (width, keep) in enumerate(self.resolutions):
            tiles = window.tiles.get(r)
            if tiles is None:
                tiles = window.tiles[r] = Tiles(self.stride(r))
            number = time_ms // width
            if self._count_in(tiles, r, number, values) and (r, number) not in window.touched_tiles:
                window.new_tiles.add((r, number))
            window.touched_tiles.add((r, number))
            for gone in tiles.prune_below(newest // width - keep):
                window.touched_tiles.add((r, gone))
        self._forget_before(window, newest - self._duplicate_span_ms)

    def _count_in(self, tiles: Tiles, r: int, number: int, values: tuple[float, ...]) -> bool:
        """Counts an event in its tile; True when that made a new tile."""
        numbers, stats, s = tiles.numbers, tiles.stats, tiles.stride
        i = bisect_left(numbers, number)
        created = i == len(numbers) or numbers[i] != number
        if created:
            numbers.insert(i, number)
            fresh = [0.0] * s
            for _, place in self._maxima[r]:
                fresh[place] = -math.inf
            stats[i * s : i * s] = array("d", fresh)
        base = i * s
        stats[base] += 1.0
        for column, place in self._sums[r]:
            stats[base + place] += values[column]
        for column, place in self._maxima[r]:
            stats[base + place] = max(stats[base + place], values[column])
        return created

    def _forget_before(self, window: EntityWindow, cut_ms: int) -> None:
        """Drops recent events at or before ``cut_ms``, remembering the latest dropped time."""
        first = window.first
        cut = bisect_right(window.times, cut_ms, first)
        if cut > first:
            latest = window.times[cut - 1]
            if window.pruned_latest is None or latest > window.pruned_latest:
                window.pruned_latest = latest
                window.meta_changed = True
            journal, checked = window.journal, window.checked_ids
            for id_hash in window.ids[first:cut]:
                journal[id_hash] = None
                checked.discard(id_hash)
            if cut * 2 >= len(window.times):
                del window.times[:cut], window.ids[:cut]
                cut = 0
            window.first = cut

    def latest(self, window: EntityWindow) -> FeatureValues:
        """The entity's features as of its newest event, over every event that has arrived:
        what the online store holds. A late event changes them though it is not the newest."""
        newest = window.newest_ms
        assert newest is not None, "an entity with no event has no features"
        # The newest is the last recent event; its previous, the one before it.
        times = window.times
        previous = times[-2] if len(times) - window.first > 1 else window.pruned_latest
        return self.features_at(window, newest, previous)

    def features_at(
        self, window: EntityWindow, time_ms: int, previous: int | None
    ) -> FeatureValues:
        """The features as of an event at ``time_ms``, over the tiles of its windows."""
        totals: dict[int, list[float]] = {}
        result: FeatureValues = {}
        for step in self._plan:
            if step.resolution < 0:
                result[step.name] = None if previous is None else (time_ms - previous) / 1000.0
                continue
            merged = totals.get(step.resolution)
            if merged is None:
                merged = totals[step.resolution] = self._merge(window, step.resolution, time_ms)
            value = merged[step.stat]
            aggregation = step.aggregation
            if aggregation is Aggregation.COUNT:
                result[step.name] = int(value)
            elif aggregation is Aggregation.MEAN:
                result[step.name] = value / merged[0]
            else:
                result[step.name] = value
        return result

    def _merge(self, window: EntityWindow, r: int, time_ms: int) -> list[float]:
        """The statistics of the tiles of the window ending with ``time_ms``'s tile."""
        width = self.resolutions[r].width_ms
        tiles = window.tiles[r]
        numbers, stats, s = tiles.numbers, tiles.stats, tiles.stride
        last = time_ms // width
        low = bisect_left(numbers, last - TILES_PER_WINDOW + 1)
        high = bisect_right(numbers, last, low)
        if low == high:
            return [0.0] * s
        merged = list(stats[low * s : (low + 1) * s])
        maxima = self._maxima[r]
        for i in range(low + 1, high):
            base = i * s
            merged[0] += stats[base]
            for _, place in self._sums[r]:
                merged[place] += stats[base + place]
            for _, place in maxima:
                merged[place] = max(merged[place], stats[base + place])
        return merged


def _values_reader(fields: tuple[str, ...]) -> Callable[[Mapping[str, Any]], tuple[float, ...]]:
    """Reads an event's source fields as floats. Built once: a generator expression per event
    cost about 6 % of the featurizer's time (py-spy), for what is usually one field."""
    if not fields:
        return lambda _event: ()
    if len(fields) == 1:
        (name,) = fields
        return lambda event: (float(event[name]),)
    getter = itemgetter(*fields)
    return lambda event: tuple(map(float, getter(event)))
