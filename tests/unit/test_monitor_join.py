"""The monitor's join table: whichever part comes first, each event joined once, TTL by event
time, and a restore from its own changelog that gives back the same table."""

from __future__ import annotations

import itertools
import random

from services.monitor.join import Change, Expired, Joined, JoinTable, Kind, Part

HOUR_MS = 3_600_000
TTL_MS = 24 * HOUR_MS


def part(event_id: str, kind: Kind, time_ms: int = 1_000) -> Part:
    return Part(event_id, kind, b"card-1", f"{kind}:{event_id}".encode(), time_ms)


def parts_of(event_id: str, time_ms: int = 1_000) -> list[Part]:
    return [
        part(event_id, Kind.FEATURES, time_ms),
        part(event_id, Kind.PREDICTION, time_ms),
        part(event_id, Kind.OUTCOME, time_ms + 60_000),
    ]


def test_every_arrival_order_joins_once_with_the_parts_as_served() -> None:
    for order in itertools.permutations(parts_of("e1")):
        table = JoinTable(TTL_MS)
        results = [table.add(p) for p in order]
        assert results[:2] == [None, None]
        joined = results[2]
        assert isinstance(joined, Joined)
        assert joined.prediction.value == b"prediction:e1"
        assert joined.outcome.value == b"outcome:e1"
        assert joined.features is not None and joined.features.value == b"features:e1"


def test_a_part_seen_again_before_or_after_the_join_is_a_duplicate() -> None:
    table = JoinTable(TTL_MS)
    first, second, third = parts_of("e1")
    assert table.add(first) is None
    assert table.add(first) is None
    assert table.duplicates == 1
    table.add(second)
    assert table.add(third) is not None
    for again in parts_of("e1"):
        assert table.add(again) is None
    assert table.duplicates == 4


def test_after_the_ttl_entries_leave_and_are_counted() -> None:
    table = JoinTable(TTL_MS)
    table.add(part("unlabelled", Kind.PREDICTION, 0))
    table.add(part("unlabelled", Kind.FEATURES, 0))
    table.add(part("orphan", Kind.OUTCOME, 0))
    table.add(part("no-vector", Kind.PREDICTION, 0))
    table.add(part("no-vector", Kind.OUTCOME, 5))
    for p in parts_of("joined", 0):
        table.add(p)
    assert table.expire().unlabelled == 0  # nothing is older than the TTL yet
    table.add(part("late", Kind.PREDICTION, TTL_MS + 10))  # moves the watermark on
    expired = table.expire()
    assert (expired.unlabelled, expired.unmatched) == (1, 1)
    assert [(j.prediction.event_id, j.features) for j in expired.joined] == [("no-vector", None)]
    assert len(table) == 1  # "late" only; the done marker of "joined" left too
    for p in parts_of("joined", 0):  # past the TTL, a part is new again
        table.add(p)
    assert table.duplicates == 0


def test_the_changelog_restores_the_same_table() -> None:
    rng = random.Random(3)
    arrivals = [p for n in range(300) for p in parts_of(f"e{n}", n * 600_000)]
    rng.shuffle(arrivals)
    arrivals = [p for p in arrivals if rng.random() > 0.2]  # some parts never come
    arrivals += rng.sample(arrivals, 100)  # and some come twice, late
    table, log = JoinTable(TTL_MS), list[Change]()
    for p in arrivals[:600]:
        table.add(p)
        table.expire()
        log += table.drain_changes()
    restored = JoinTable(TTL_MS)
    restored.restore(log)
    assert restored.watermark_ms == table.watermark_ms
    assert len(restored) == len(table)
    duplicates_before = table.duplicates
    for p in arrivals[600:]:  # the rest: both tables answer alike
        assert _summary(restored.add(p)) == _summary(table.add(p))
        assert _expired(restored) == _expired(table)
    assert restored.duplicates == table.duplicates - duplicates_before > 0


def _summary(joined: Joined | None) -> tuple[str, bool] | None:
    return None if joined is None else (joined.prediction.event_id, joined.features is None)


def _expired(table: JoinTable) -> tuple[int, int, list[str]]:
    e = table.expire()
    return e.unlabelled, e.unmatched, sorted(j.prediction.event_id for j in e.joined)


def test_past_its_bound_the_table_lets_the_oldest_go_and_counts_them() -> None:
    """Outcomes that never come (or lag far behind): the table stays at its bound; what leaves
    early is accounted for exactly as at the TTL, and the changelog tombstones it."""
    bound = 100
    table = JoinTable(TTL_MS, max_entries=bound)
    expired = Expired()
    for i in range(1_000):  # ten times the bound, all well within the TTL
        table.add(part(f"p{i}", Kind.PREDICTION, 1_000 + i))
        table.add(part(f"p{i}", Kind.FEATURES, 1_000 + i))
        expired += table.expire()
        assert len(table) <= bound
    assert (expired.unlabelled, expired.evicted) == (900, 900)
    assert table.add(part("p999", Kind.OUTCOME, 5_000)) is not None  # the newest still join
    assert table.add(part("p0", Kind.OUTCOME, 5_000)) is None  # the oldest left
    restored = JoinTable(TTL_MS, max_entries=bound)
    restored.restore(table.drain_changes())
    assert len(restored) == len(table) == bound + 1  # the orphan outcome, until the next expire
    restored.expire()
    assert len(restored) == bound


def test_a_bound_reached_by_joined_events_evicts_done_markers_as_evicted_only() -> None:
    table = JoinTable(TTL_MS, max_entries=10)
    expired = Expired()
    for i in range(50):
        for p in parts_of(f"j{i}", 1_000 + i):
            table.add(p)
        expired += table.expire()
    assert len(table) == 10
    assert (expired.unlabelled, expired.unmatched, expired.joined) == (0, 0, [])
    assert expired.evicted == 40


def test_done_markers_leave_after_their_own_ttl_so_the_table_stays_small() -> None:
    """A day of joins at a steady rate: the table holds the done markers of the last
    ``done_ttl`` and no more, its time heap does not keep the joined events' items, a copy
    within the span is a duplicate, and the changelog restores the same markers."""
    done_ttl = 5 * 60_000
    table = JoinTable(TTL_MS, done_ttl_ms=done_ttl)
    log: list[Change] = []
    step = 1_000  # one event a second of event time
    for i in range(20_000):
        for p in parts_of(f"e{i}", i * step):
            table.add(p)
        table.expire()
        log += table.drain_changes()
        assert len(table) <= done_ttl // step + 70  # the outcome's minute, and a second's slack
    assert len(table._by_time) <= 2 * len(table._entries) + 1_024
    newest = parts_of("e19999", 19_999 * step)
    assert table.add(newest[0]) is None and table.duplicates == 1  # within the span
    restored = JoinTable(TTL_MS, done_ttl_ms=done_ttl)
    restored.restore(log)
    assert len(restored) == len(table)
    held = len(restored)
    copy = part("e19000", Kind.PREDICTION, 19_000 * step)  # its marker left: the copy waits
    assert restored.add(copy) is None
    assert (restored.duplicates, len(restored)) == (0, held + 1)
