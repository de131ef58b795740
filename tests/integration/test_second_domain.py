"""A second, different domain through the same featurizer and scorer: no service code of its own.

``second_domain/`` holds what a team adding a domain writes: ``features/domains/rides.py`` (entity
driver keyed by driver_id, trip_id and pickup_time as id and time, its own windows, checks and
heuristic) and ``schemas/rides.trips.avsc`` and ``rides.outcomes.avsc``; the features and
predictions schemas beside them are generated from the declaration (``streamml schemas generate``).
The services run as ``streamml run featurizer`` and ``streamml run scorer --domain rides`` pointed
at those folders. Trips are written and results read with fastavro and the ``.avsc`` files only.
"""

from __future__ import annotations

import random
import shutil
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.core.domains import load_domain, load_domains
from services.core.kafka import create_topics, topic_specs
from services.core.settings import StackSettings
from services.featurestore.store import apply_declarations, open_store
from services.stack.services import ServiceProcess, service_env
from tests.integration.helpers import TopicReader, publish
from tests.outside import OutsideCodec
from tests.reference import previous_time

pytestmark = pytest.mark.integration

SECOND_DOMAIN = Path(__file__).resolve().parent / "second_domain"
FEATURES_DIR = SECOND_DOMAIN / "features"
SCHEMAS_DIR = SECOND_DOMAIN / "schemas"
REPOSITORY_SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
PLATFORM_SCHEMAS = (  # every stack has them
    "changelog_mark.avsc",
    "dlq.avsc",
    "ml.models.avsc",
    "ml.models.events.avsc",
    "window_entry.avsc",
)

MINUTE_MS = 60_000
# The rides declaration, spelled again on purpose: the featurizer's output is checked against
# this independent reading of it, not against its own code.
TRIPS_10M_MS = 10 * MINUTE_MS
HOUR_MS = 60 * MINUTE_MS
LATENESS_MS = 30 * MINUTE_MS
DUPLICATE_SPAN_MS = 5 * MINUTE_MS  # the default
TILES = 12  # a window is the last 12 tiles of a twelfth of it
FEATURE_NAMES = (
    "trips_10m",
    "fare_sum_1h",
    "fare_mean_1h",
    "distance_max_1h",
    "seconds_since_last_trip",
)


RIDES = load_domain(FEATURES_DIR, "rides")
TRIPS = OutsideCodec("rides.trips.avsc", SCHEMAS_DIR)
FEATURES = OutsideCodec("rides.features.avsc", SCHEMAS_DIR)
PREDICTIONS = OutsideCodec("rides.predictions.avsc", SCHEMAS_DIR)
DEAD_LETTERS = OutsideCodec("dlq.avsc", REPOSITORY_SCHEMAS)


class KeyedReader(TopicReader):
    """A TopicReader that decodes, keeping each record's key."""

    def __init__(self, settings: StackSettings, topic: str, codec: OutsideCodec) -> None:
        super().__init__(settings, topic)
        self._codec = codec

    @property
    def records(self) -> list[tuple[bytes | None, dict[str, Any]]]:
        return [(k, self._codec.decode(v)) for k, v in zip(self.keys, self.values, strict=True)]

    def read_records(
        self, done: Callable[[list[tuple[bytes | None, dict[str, Any]]]], bool], timeout_s: float
    ) -> list[tuple[bytes | None, dict[str, Any]]]:
        self.read_until(lambda _: done(self.records), timeout_s)
        return self.records

    def settle_records(self, seconds: float) -> list[tuple[bytes | None, dict[str, Any]]]:
        """Keeps reading for a while: anything duplicated or late shows up here."""
        self.settle(seconds)
        return self.records


def millis(value: datetime) -> int:
    return (value - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


@dataclass(frozen=True)
class Seen:
    trip_id: str
    time_ms: int
    fare: float
    distance_km: float


class ReferenceRides:
    """The rides features by brute force over every accepted trip of a driver, in arrival order.

    For an accepted trip e of driver d with pickup time t: over d's accepted trips that arrived
    up to and including e whose tile (pickup time // (W / 12)) is one of the 12 ending with
    t's. A retry is a trip whose id an accepted trip of the driver has within the duplicate
    span (5 minutes) of the driver's newest pickup time.
    """

    def __init__(self) -> None:
        self.accepted: dict[str, list[Seen]] = defaultdict(list)

    def offer(self, trip: dict[str, Any]) -> dict[str, Any] | None:
        """The trip's features, or None when it is a retry or late."""
        history = self.accepted[trip["driver_id"]]
        t = trip["pickup_time"]
        newest = max((s.time_ms for s in history), default=None)
        if newest is not None and any(
            s.trip_id == trip["trip_id"] and s.time_ms > newest - DUPLICATE_SPAN_MS for s in history
        ):
            return None
        if newest is not None and t < newest - LATENESS_MS:
            return None
        previous = previous_time((s.time_ms for s in history), newest, t, DUPLICATE_SPAN_MS)
        history.append(Seen(trip["trip_id"], t, trip["fare"], trip["distance_km"]))
        return self._features(history, t, previous)

    def latest(self, driver: str) -> dict[str, Any]:
        """What the online store holds: as of the driver's newest trip, over every accepted
        trip, including ones that arrived after the newest (out of order)."""
        history = self.accepted[driver]
        t = max(s.time_ms for s in history)
        recent = sorted(s.time_ms for s in history if s.time_ms > t - DUPLICATE_SPAN_MS)
        gone = [s.time_ms for s in history if s.time_ms <= t - DUPLICATE_SPAN_MS]
        previous = recent[-2] if len(recent) > 1 else max(gone, default=None)
        return self._features(history, t, previous)

    @staticmethod
    def _features(history: list[Seen], t: int, previous: int | None) -> dict[str, Any]:
        def within(window_ms: int) -> list[Seen]:
            width = -(-window_ms // TILES)
            return [s for s in history if 0 <= t // width - s.time_ms // width < TILES]

        hour = within(HOUR_MS)
        return {
            "trips_10m": len(within(TRIPS_10M_MS)),
            "fare_sum_1h": sum(s.fare for s in hour),
            "fare_mean_1h": sum(s.fare for s in hour) / len(hour),
            "distance_max_1h": max(s.distance_km for s in hour),
            "seconds_since_last_trip": None if previous is None else (t - previous) / 1000.0,
        }


def assert_features_equal(actual: dict[str, Any], expected: dict[str, Any], what: str) -> None:
    assert actual["trips_10m"] == expected["trips_10m"], what
    for name in FEATURE_NAMES[1:]:
        if expected[name] is None:
            assert actual[name] is None, (what, name)
        else:
            assert actual[name] == pytest.approx(expected[name], rel=1e-9), (what, name)


@pytest.fixture(scope="module")
def rides_stack(stack: StackSettings, tmp_path_factory: pytest.TempPathFactory) -> StackSettings:
    """The session's broker and Redis, with the rides folders as features and schemas (the
    rides schemas beside the platform's own)."""
    schemas = tmp_path_factory.mktemp("rides-schemas")
    for path in [*SCHEMAS_DIR.glob("*.avsc"), *(REPOSITORY_SCHEMAS / n for n in PLATFORM_SCHEMAS)]:
        shutil.copy(path, schemas / path.name)
    settings = stack.model_copy(
        update={
            "home": tmp_path_factory.mktemp("rides-home"),
            "features_dir": FEATURES_DIR,
            "schemas_dir": schemas,
        }
    )
    domains = list(load_domains(FEATURES_DIR).values())
    assert [d.name for d in domains] == ["rides"]
    create_topics(settings, topic_specs(settings, domains))
    apply_declarations(settings, domains)
    return settings


@pytest.fixture(scope="module")
def rides_services(rides_stack: StackSettings, logs_dir: Path) -> Iterator[list[ServiceProcess]]:
    env = service_env(rides_stack)
    started = [
        ServiceProcess("featurizer", env, logs_dir / "rides-featurizer.log"),
        ServiceProcess("scorer", env, logs_dir / "rides-scorer.log", "--domain", "rides"),
    ]
    yield started
    for service in started:
        if service.process.poll() is None:
            service.stop()


@dataclass
class Sent:
    good: list[dict[str, Any]]
    expected: dict[str, dict[str, Any]]  # trip_id -> its features
    latest: dict[str, dict[str, Any]]  # driver_id -> its online row: as of its newest trip
    retry: dict[str, Any]  # of a driver's newest trip: within the duplicate span, dropped
    stale_copy: dict[str, Any]  # of an early trip, sent at the end: 30+ min behind, late
    bad_fare: dict[str, Any]
    late: dict[str, Any]


@pytest.fixture(scope="module")
def sent(rides_stack: StackSettings, rides_services: list[ServiceProcess]) -> Sent:
    """160 trips of 8 drivers in 40 min, up to 8 min out of order; a retry, a bad and a late one,
    and a copy of an early trip sent after all the others (late by then)."""
    rng = random.Random(20)
    run = uuid.uuid4().hex[:8]
    drivers = [f"itest-driver-{i}" for i in range(8)]
    base = int(time.time() * 1000) - 50 * MINUTE_MS
    good = [
        {
            "trip_id": f"trip-{run}-{i}",
            "driver_id": rng.choice(drivers),
            "city": rng.choice(["Lisbon", "Porto", "Braga"]),
            "distance_km": round(rng.uniform(0.5, 30.0), 2),
            "fare": round(rng.uniform(4.0, 80.0), 2),
            # i ms on top keeps every pickup time distinct.
            "pickup_time": base + i * 15_000 + rng.randrange(-240, 240) * 1_000 + i,
        }
        for i in range(160)
    ]
    retry = dict(max((t for t in good if t["driver_id"] == drivers[1]), key=_pickup))
    stale_copy = dict(good[20])
    bad_fare = {**good[30], "trip_id": f"trip-{run}-bad", "fare": -3.0}
    newest_of_0 = max(t["pickup_time"] for t in good if t["driver_id"] == drivers[0])
    late = {
        **good[0],
        "trip_id": f"trip-{run}-late",
        "driver_id": drivers[0],
        "pickup_time": newest_of_0 - 45 * MINUTE_MS,
    }
    reference = ReferenceRides()
    expected: dict[str, dict[str, Any]] = {}
    for trip in [*good, retry, stale_copy, late]:
        features = reference.offer(trip)
        if features is not None:
            expected[trip["trip_id"]] = features
    assert set(expected) == {t["trip_id"] for t in good}  # the copies and the late one are not
    sending = [*good, retry, stale_copy, bad_fare, late]
    items = [(t["driver_id"].encode(), TRIPS.encode(t)) for t in sending]
    publish(rides_stack, "rides.trips", items)
    latest = {driver: reference.latest(driver) for driver in {t["driver_id"] for t in good}}
    return Sent(good, expected, latest, retry, stale_copy, bad_fare, late)


def _pickup(trip: dict[str, Any]) -> int:
    return int(trip["pickup_time"])


def test_every_trip_gets_exactly_one_prediction_keyed_by_its_driver(
    rides_stack: StackSettings, sent: Sent
) -> None:
    wanted = {t["trip_id"] for t in sent.good}
    reader = KeyedReader(rides_stack, "rides.predictions", PREDICTIONS)
    reader.read_records(lambda records: {r["event_id"] for _, r in records} >= wanted, 120)
    records = reader.settle_records(2.0)
    reader.close()
    found: dict[str, list[tuple[bytes | None, dict[str, Any]]]] = defaultdict(list)
    for key, record in records:
        found[record["event_id"]].append((key, record))
    assert set(found) == wanted, f"{len(wanted - set(found))} trips without a prediction"
    assert all(len(p) == 1 for p in found.values()), "a trip was predicted more than once"
    for trip in sent.good:
        [(key, prediction)] = found[trip["trip_id"]]
        assert key == trip["driver_id"].encode()
        assert prediction["driver_id"] == trip["driver_id"]
        assert millis(prediction["event_time"]) == trip["pickup_time"]
        assert prediction["model_name"] == "rides-complaints"
        assert (prediction["served_by"], prediction["model_version"]) == ("fallback", "heuristic")
        # The declared heuristic over the independently computed inputs.
        inputs = {**sent.expected[trip["trip_id"]], "fare": trip["fare"]}
        inputs["distance_km"] = trip["distance_km"]
        score = RIDES.heuristic.score(inputs)
        assert prediction["score"] == pytest.approx(score, abs=1e-5), trip["trip_id"]
        assert prediction["decision"] == (prediction["score"] >= 0.5)


def test_feature_vectors_equal_an_independent_recomputation(
    rides_stack: StackSettings, sent: Sent
) -> None:
    wanted = set(sent.expected)
    reader = KeyedReader(rides_stack, "rides.features", FEATURES)
    reader.read_records(lambda records: {r["trip_id"] for _, r in records} >= wanted, 120)
    records = reader.settle_records(1.0)
    reader.close()
    by_trip = {t["trip_id"]: t for t in sent.good}
    seen = set()
    for key, vector in records:
        trip = by_trip.get(vector["trip_id"])
        assert trip is not None, f"a vector for {vector['trip_id']}, which was not accepted"
        seen.add(trip["trip_id"])
        assert key == trip["driver_id"].encode()
        assert vector["driver_id"] == trip["driver_id"]
        assert millis(vector["pickup_time"]) == trip["pickup_time"]
        assert (vector["fare"], vector["distance_km"]) == (trip["fare"], trip["distance_km"])
        assert_features_equal(vector, sent.expected[trip["trip_id"]], trip["trip_id"])
    assert seen == wanted
    # Out-of-order arrivals and bursts made the windows do real work.
    assert max(f["trips_10m"] for f in sent.expected.values()) >= 3
    assert any(f["seconds_since_last_trip"] is None for f in sent.expected.values())


def test_bad_and_late_trips_go_to_the_dead_letter_topic(
    rides_stack: StackSettings, sent: Sent
) -> None:
    reader = KeyedReader(rides_stack, "rides.trips.dlq", DEAD_LETTERS)
    reader.read_records(lambda records: len(records) >= 3, 60)
    letters = [letter for _, letter in reader.settle_records(1.0)]
    reader.close()
    reasons = {TRIPS.decode(x["original_value"])["trip_id"]: x for x in letters}
    assert set(reasons) == {
        sent.bad_fare["trip_id"],
        sent.late["trip_id"],
        sent.stale_copy["trip_id"],
    }
    assert reasons[sent.bad_fare["trip_id"]]["reason"] == "check_failed"
    assert "fare" in reasons[sent.bad_fare["trip_id"]]["detail"]
    assert reasons[sent.late["trip_id"]]["reason"] == "late"
    # A copy that comes after its driver moved 30+ minutes on is late, not a duplicate: the
    # featurizer recognises copies within its duplicate span (5 minutes) only.
    assert reasons[sent.stale_copy["trip_id"]]["reason"] == "late"
    assert all(x["source_topic"] == "rides.trips" for x in letters)


def test_the_online_store_holds_each_drivers_latest_features(
    rides_stack: StackSettings, sent: Sent
) -> None:
    drivers = sorted(sent.latest)
    refs = [f"rides_driver_features:{name}" for name in FEATURE_NAMES]
    rows = [{"driver_id": d} for d in drivers]
    store = open_store(rides_stack)

    def read() -> dict[str, list[Any]]:
        online: dict[str, list[Any]] = store.get_online_features(
            features=refs, entity_rows=rows
        ).to_dict()
        return online

    expected = {name: [sent.latest[d][name] for d in drivers] for name in FEATURE_NAMES}
    deadline = time.monotonic() + 30
    online = read()
    while time.monotonic() < deadline and online["trips_10m"] != expected["trips_10m"]:
        time.sleep(0.2)
        online = read()
    assert online["driver_id"] == drivers
    for i, driver in enumerate(drivers):
        actual = {name: online[name][i] for name in FEATURE_NAMES}
        assert_features_equal(actual, sent.latest[driver], driver)


def test_the_services_stop_cleanly(rides_services: list[ServiceProcess], sent: Sent) -> None:
    for service in rides_services:
        assert service.process.poll() is None, f"{service.name} died: see {service.log_path}"
    assert [service.stop() for service in rides_services] == [0, 0]
