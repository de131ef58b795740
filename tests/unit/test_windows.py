"""The featurizer's window arithmetic against a brute-force recomputation (conftest.py)."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from services.core.declarations import Domain
from services.core.windows import EntityAggregator, EntityWindow
from tests.expected import CARD_FEATURES as CONTRACT_FEATURES

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
T0 = 1_767_225_600_000
CARD_FEATURES = set(CONTRACT_FEATURES)


def assert_same_features(actual: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    assert set(actual) == set(expected) == CARD_FEATURES, where
    for name, want in expected.items():
        got = actual[name]
        if want is None:
            assert got is None, f"{where}: {name}={got!r}, expected null"
        elif name.startswith("txn_count"):
            assert type(got) is int, f"{where}: {name}={got!r} is not an int"
            assert got == want, f"{where}: {name}={got}, expected {want}"
        else:
            assert got == pytest.approx(want, rel=1e-9, abs=1e-9), f"{where}: {name}={got!r}"


class Replay:
    """Feeds events to the aggregator as the processor would, checking every verdict."""

    def __init__(self, domain: Domain, reference: Any) -> None:
        self.aggregator = EntityAggregator(domain, "card")
        self.lateness_ms = int(domain.allowed_lateness.total_seconds() * 1000)
        self.reference = reference
        self.windows: dict[str, EntityWindow] = {}
        self.verdicts: Counter[str] = Counter()

    def offer(self, event: dict[str, Any]) -> dict[str, Any] | None:
        window = self.windows.setdefault(event["card_id"], EntityWindow())
        where = f"event {event['event_id']} at {event['event_time']}"
        verdict, expected = self.reference.offer(event)
        self.verdicts[verdict] += 1
        duplicate = window.has(event["event_id"])
        late = window.is_late(event["event_time"], self.lateness_ms)
        if verdict == "duplicate":
            assert duplicate, f"{where}: a repeated event_id was not recognised"
            return None
        assert not duplicate, f"{where}: taken for a duplicate"
        assert late == (verdict == "late"), f"{where}: late={late}, expected {verdict}"
        if late:
            return None
        features = self.aggregator.add(window, event["event_id"], event["event_time"], event)
        assert_same_features(features, expected, where)
        return features


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_features_equal_a_brute_force_recomputation(
    payments: Domain, reference: Any, make_stream: Any, seed: int
) -> None:
    replay = Replay(payments, reference)
    for event in make_stream(seed):
        replay.offer(event)
    # The stream exercised every path: in-order, out-of-order, late and repeated events.
    assert replay.verdicts["accepted"] > 200
    assert replay.verdicts["late"] > 0
    assert replay.verdicts["duplicate"] > 0


def test_state_stays_bounded_on_a_long_stream(
    payments: Domain, reference: Any, make_transaction: Any
) -> None:
    """Three days of a busy card: it keeps the tiles its windows and the lateness reach and the
    events of its duplicate span, not the events its windows count."""
    rng = random.Random(11)
    span_ms = int(payments.duplicate_span.total_seconds() * 1000)
    replay = Replay(payments, reference)
    times = sorted(T0 + rng.randrange(72 * HOUR_MS) for _ in range(2_500))
    arrival = sorted(times, key=lambda t: t + rng.uniform(0, 50 * MINUTE_MS))
    resolutions = replay.aggregator.resolutions
    most_tiles = 0
    for i, t in enumerate(arrival):
        event = make_transaction(f"e{i}", t, amount=rng.uniform(1, 100))
        assert replay.offer(event) is not None  # disorder within the lateness: all accepted
        window = replay.windows["card-1"]
        assert window.max_time is not None
        floor = window.max_time - span_ms
        assert list(window.recent_times) == [t for t in reference.times_of("card-1") if t > floor]
        for r, (width, keep) in enumerate(resolutions):
            tiles = window.tiles[r]
            assert len(tiles) <= keep + 1
            assert tiles.numbers[0] >= window.max_time // width - keep
        most_tiles = max(most_tiles, sum(len(t) for t in window.tiles.values()))
    # The 24 h count reached hundreds of events; the state held a few hundred numbers.
    assert replay.offer(make_transaction("last", max(times)))["txn_count_24h"] > 600
    bound = sum(keep + 1 for _, keep in resolutions)
    assert most_tiles <= bound < 300
    assert len(replay.windows["card-1"].recent_times) < 100


def test_seconds_since_last_reaches_past_pruned_events(
    payments: Domain, reference: Any, make_transaction: Any
) -> None:
    replay = Replay(payments, reference)
    replay.offer(make_transaction("a", T0))
    replay.offer(make_transaction("b", T0 + 26 * HOUR_MS))  # "a" leaves the duplicate span
    assert list(replay.windows["card-1"].recent_times) == [T0 + 26 * HOUR_MS]
    features = replay.offer(make_transaction("c", T0 + 25 * HOUR_MS + 30 * MINUTE_MS))
    assert features is not None
    assert features["seconds_since_last_txn"] == 25.5 * 3600
    assert features["txn_count_24h"] == 1  # "b" is after it, "a" out of its window


def test_a_window_is_its_last_twelve_tiles(
    payments: Domain, reference: Any, make_transaction: Any
) -> None:
    """5 minutes in tiles of 25 s: an event counts the events of its own tile and the eleven
    before it, so the far edge is exact to a tile, and its own tile's later events count too."""
    tile = 25_000
    assert T0 % tile == 0
    replay = Replay(payments, reference)
    replay.offer(make_transaction("a", T0, amount=1.0))
    twelve_tiles_on = replay.offer(make_transaction("b", T0 + 12 * tile, amount=2.0))
    assert twelve_tiles_on is not None
    assert twelve_tiles_on["txn_count_5m"] == 1  # a's tile is the 13th back
    assert twelve_tiles_on["txn_count_1h"] == 2
    last_tile_in = replay.offer(make_transaction("c", T0 + 12 * tile - 1, amount=4.0))
    assert last_tile_in is not None
    assert last_tile_in["txn_count_5m"] == 2  # a and c; b is in a later tile
    assert last_tile_in["amount_sum_1h"] == 5.0  # in the first 5-minute tile, with a
    assert last_tile_in["seconds_since_last_txn"] == (12 * tile - 1) / 1000
    same_tile_later = replay.offer(make_transaction("d", T0 + 12 * tile - 2_000, amount=1.0))
    assert same_tile_later is not None
    assert same_tile_later["txn_count_5m"] == 3  # c is after it, in its tile, arrived before


def test_equal_event_times_count_earlier_arrivals_only(
    payments: Domain, reference: Any, make_transaction: Any
) -> None:
    replay = Replay(payments, reference)
    first = replay.offer(make_transaction("a", T0, amount=3.0))
    second = replay.offer(make_transaction("b", T0, amount=5.0))
    assert first is not None and second is not None
    assert (first["txn_count_5m"], second["txn_count_5m"]) == (1, 2)
    assert first["seconds_since_last_txn"] is None
    assert second["seconds_since_last_txn"] == 0.0
    assert (first["amount_max_24h"], second["amount_max_24h"]) == (3.0, 5.0)


def test_lateness_bound_is_inclusive(payments: Domain) -> None:
    lateness = int(payments.allowed_lateness.total_seconds() * 1000)
    assert lateness == HOUR_MS
    window = EntityWindow()
    assert not window.is_late(0, lateness)  # nothing seen yet: nothing is late
    EntityAggregator(payments, "card").add(window, "a", T0, {"amount": 1.0})
    assert not window.is_late(T0 - HOUR_MS, lateness)
    assert window.is_late(T0 - HOUR_MS - 1, lateness)


def test_the_latest_features_count_a_late_event_that_is_not_the_newest(payments: Domain) -> None:
    """The online row is as of the newest event, over everything that arrived, late or not."""
    aggregator = EntityAggregator(payments, "card")
    window = EntityWindow()
    newest = aggregator.add(window, "b", T0 + 10 * MINUTE_MS, {"amount": 5.0})
    late = aggregator.add(window, "a", T0, {"amount": 7.0})  # arrives after, happened before
    assert late["txn_count_1h"] == 1 and newest["txn_count_1h"] == 1
    latest = aggregator.latest(window)
    assert latest["txn_count_1h"] == 2
    assert latest["amount_max_24h"] == 7.0
    assert latest["seconds_since_last_txn"] == 600.0
    aggregator.count(window, "c", T0 + 11 * MINUTE_MS, {"amount": 1.0})
    assert aggregator.latest(window)["txn_count_5m"] == 2
