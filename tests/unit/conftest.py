"""Shared fixtures for unit tests, and an independent reference model of the featurizer.

``ReferenceFeaturizer`` recomputes the payments features by brute force from their
definition, sharing no code with ``services.core.windows``: for an accepted transaction e of
card c with event time t, over the accepted transactions of c that arrived up to and
including e whose tile (event time // w, w = ceil(W / 12)) is one of the 12 ending with t's.
A transaction is a duplicate when an accepted one of its card with the same id has an event
time within the duplicate span (5 minutes) of the card's newest. The window lengths, the
tiling and the bounds are spelled here on purpose (the declaration is checked against the
schema elsewhere).
"""

from __future__ import annotations

import os
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.core.declarations import Domain
from services.core.domains import load_domain
from services.core.paths import default_features_dir, default_schemas_dir
from services.core.schemas import SchemaStore
from services.core.serde import CodecFactory
from services.scorer.vectors import VectorSpec
from tests.reference import previous_time

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
LATENESS_MS = HOUR_MS
DUPLICATE_SPAN_MS = 5 * MINUTE_MS
TILES = 12
BASE_TIME_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z

COUNT_WINDOWS_MS = {
    "txn_count_5m": 5 * MINUTE_MS,
    "txn_count_1h": HOUR_MS,
    "txn_count_24h": DAY_MS,
}


@dataclass(frozen=True)
class Seen:
    event_id: str
    time_ms: int
    amount: float


class ReferenceFeaturizer:
    """Brute force over every accepted transaction of a card, in arrival order; never prunes."""

    def __init__(self) -> None:
        self.accepted: dict[str, list[Seen]] = defaultdict(list)

    def offer(self, event: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        """("accepted", features) | ("duplicate", None) | ("late", None)."""
        history = self.accepted[event["card_id"]]
        t = event["event_time"]
        newest = max((seen.time_ms for seen in history), default=None)
        if newest is not None and any(
            seen.event_id == event["event_id"] and seen.time_ms > newest - DUPLICATE_SPAN_MS
            for seen in history
        ):
            return "duplicate", None
        if newest is not None and t < newest - LATENESS_MS:
            return "late", None
        previous = previous_time((s.time_ms for s in history), newest, t, DUPLICATE_SPAN_MS)
        history.append(Seen(event["event_id"], t, float(event["amount"])))
        return "accepted", self._features(history, t, previous)

    @staticmethod
    def _features(history: list[Seen], t: int, previous: int | None) -> dict[str, Any]:
        def within(window_ms: int) -> list[Seen]:
            width = -(-window_ms // TILES)
            last = t // width
            return [s for s in history if last - TILES < s.time_ms // width <= last]

        features: dict[str, Any] = {
            name: len(within(window)) for name, window in COUNT_WINDOWS_MS.items()
        }
        hour = [s.amount for s in within(HOUR_MS)]
        day = [s.amount for s in within(DAY_MS)]
        features["amount_sum_1h"] = sum(hour)
        features["amount_mean_24h"] = sum(day) / len(day)
        features["amount_max_24h"] = max(day)
        features["seconds_since_last_txn"] = None if previous is None else (t - previous) / 1000.0
        return features

    def times_of(self, card: str) -> list[int]:
        return sorted(seen.time_ms for seen in self.accepted[card])


def transaction(
    event_id: str,
    time_ms: int,
    *,
    card: str = "card-1",
    amount: float = 10.0,
    merchant: str = "m-1",
    currency: str = "EUR",
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "card_id": card,
        "merchant_id": merchant,
        "amount": amount,
        "currency": currency,
        "event_time": time_ms,
    }


def random_stream(
    seed: int, n_events: int = 300, n_cards: int = 10, span_hours: float = 30.0
) -> list[dict[str, Any]]:
    """Transactions in arrival order: bursts, equal timestamps, disorder, late ones, retries.

    Arrival order is event time plus a random delay: mostly under an hour (accepted out of
    order), sometimes up to three hours (late). About one event in fifteen is sent again a
    few arrivals later with the same event_id (a producer retry).
    """
    rng = random.Random(seed)
    cards = [f"card-{i}" for i in range(n_cards)]
    span_ms = int(span_hours * HOUR_MS)
    events: list[dict[str, Any]] = []
    while len(events) < n_events:
        if events and rng.random() < 0.3:  # a burst on the previous card
            previous = events[-1]
            card = previous["card_id"]
            t = previous["event_time"] + rng.choice([0, 1, 1_000, 30_000, 4 * MINUTE_MS])
        else:
            card = rng.choice(cards)
            t = BASE_TIME_MS + rng.randrange(span_ms)
            if rng.random() < 0.3:
                t -= t % 1_000  # whole seconds, so that equal times happen
        amount = rng.choice([0.0, 1.0, round(rng.uniform(0.5, 900.0), 2), rng.expovariate(0.01)])
        events.append(
            transaction(
                f"s{seed}-e{len(events)}",
                t,
                card=card,
                amount=amount,
                merchant=f"m-{rng.randrange(5)}",
            )
        )
    delays = [
        rng.uniform(0, 3 * HOUR_MS) if rng.random() < 0.08 else rng.uniform(0, 55 * MINUTE_MS)
        for _ in events
    ]
    arrival = [e for _, e in sorted(zip(delays, events, strict=True), key=_arrival_key)]
    with_retries: list[dict[str, Any]] = []
    pending: list[tuple[int, dict[str, Any]]] = []
    for position, event in enumerate(arrival):
        with_retries.append(event)
        if rng.random() < 1 / 15:
            pending.append((position + rng.randint(1, 8), dict(event)))
        with_retries.extend(retry for due, retry in pending if due <= position)
        pending = [(due, retry) for due, retry in pending if due > position]
    with_retries.extend(retry for _, retry in pending)
    return with_retries


def _arrival_key(pair: tuple[float, dict[str, Any]]) -> float:
    delay, event = pair
    return float(event["event_time"] + delay)


@pytest.fixture(scope="session")
def schemas_dir() -> Path:
    return default_schemas_dir()


@pytest.fixture(scope="session")
def schema_store(schemas_dir: Path) -> SchemaStore:
    return SchemaStore.from_dir(schemas_dir)


@pytest.fixture
def codecs(schema_store: SchemaStore) -> CodecFactory:
    return CodecFactory(schema_store)


@pytest.fixture(scope="session")
def payments() -> Domain:
    return load_domain(default_features_dir(), "payments")


@pytest.fixture
def spec(payments: Domain, schemas_dir: Path) -> VectorSpec:
    """What a caller's payments vector has (the scorer's HTTP and batch paths)."""
    return VectorSpec.for_domain(payments, schemas_dir)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No STREAMML_* variable from the caller's shell; the working directory is empty."""
    for name in list(os.environ):
        if name.startswith("STREAMML_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def reference() -> ReferenceFeaturizer:
    return ReferenceFeaturizer()


@pytest.fixture(scope="session")
def make_stream() -> Any:
    """``random_stream(seed, n_events=300, n_cards=10, span_hours=30.0)``."""
    return random_stream


@pytest.fixture(scope="session")
def make_transaction() -> Any:
    """``transaction(event_id, time_ms, *, card, amount, merchant, currency)``."""
    return transaction
