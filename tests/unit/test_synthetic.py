"""The synthetic payments stream: deterministic, schema-valid, and fraud that looks like fraud."""

from __future__ import annotations

import json
import re
import statistics
import uuid
from collections import defaultdict
from typing import Any

import pytest
from fastavro.schema import parse_schema
from fastavro.validation import validate

from services.core.paths import default_schemas_dir
from services.producer.synthetic import CURRENCIES, LabelledTransaction, PaymentsGenerator

START_MS = 1_700_000_000_000


def _stream(n: int, **config: Any) -> list[LabelledTransaction]:
    options: dict[str, Any] = {"seed": 11, "start_ms": START_MS} | config
    return list(PaymentsGenerator(**options).events(n))


def test_same_seed_same_events_and_a_different_seed_differs() -> None:
    first = _stream(2000, fraud_share=0.05)
    assert first == _stream(2000, fraud_share=0.05)
    assert [t.record for t in first] != [t.record for t in _stream(2000, fraud_share=0.05, seed=12)]


def test_a_shorter_stream_is_a_prefix_of_a_longer_one() -> None:
    assert _stream(300) == _stream(5000)[:300]


def test_records_fit_the_transactions_schema() -> None:
    source = json.loads((default_schemas_dir() / "payments.transactions.avsc").read_text())
    schema = parse_schema(source)
    names = [f["name"] for f in source["fields"]]
    events = _stream(3000, fraud_share=0.05)
    for event in events:
        record = event.record
        assert list(record) == names
        assert validate(record, schema, raise_errors=True)
        assert uuid.UUID(hex=record["event_id"]).version == 4
        assert re.fullmatch(r"card-\d{6}", record["card_id"])
        assert re.fullmatch(r"m-\d{4}", record["merchant_id"])
        assert record["amount"] >= 0.01
        assert round(record["amount"], 2) == record["amount"]
        assert record["currency"] in CURRENCIES
    assert len({e.record["event_id"] for e in events}) == len(events)
    times = [e.record["event_time"] for e in events]
    assert times[0] >= START_MS
    assert times == sorted(times)


def test_mostly_eur_with_some_usd_and_gbp() -> None:
    currencies = [e.record["currency"] for e in _stream(5000)]
    assert currencies.count("EUR") / len(currencies) > 0.7
    assert "USD" in currencies
    assert "GBP" in currencies


def test_event_times_follow_the_rate() -> None:
    events = _stream(5000, rate_per_s=10.0, fraud_share=0.0)
    span_s = (events[-1].record["event_time"] - events[0].record["event_time"]) / 1000.0
    assert 5000 / span_s == pytest.approx(10.0, rel=0.15)


@pytest.mark.parametrize("share", [0.0, 0.02, 0.08])
def test_fraud_share_is_roughly_as_configured(share: float) -> None:
    events = _stream(30_000, fraud_share=share)
    observed = sum(e.is_fraud for e in events) / len(events)
    assert observed == pytest.approx(share, abs=max(0.25 * share, 1e-9))


def test_fraud_comes_in_bursts_at_new_merchants_with_big_amounts() -> None:
    events = _stream(30_000, cards=200, fraud_share=0.03, rate_per_s=0.05)
    legit_amounts: dict[str, list[float]] = defaultdict(list)
    legit_merchants: dict[str, set[str]] = defaultdict(set)
    bursts: list[list[dict[str, Any]]] = []
    open_burst: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        record, card = event.record, event.record["card_id"]
        if not event.is_fraud:
            legit_amounts[card].append(record["amount"])
            legit_merchants[card].add(record["merchant_id"])
            continue
        burst = open_burst.get(card)
        if burst is None or record["event_time"] - burst[-1]["event_time"] > 120_000:
            burst = open_burst[card] = []
            bursts.append(burst)
        burst.append(record)
    complete = [b for b in bursts if b[0]["event_time"] >= START_MS + 120_000]
    assert len(complete) > 50  # bursts under way at the start may have begun before it
    for burst in complete:
        card = burst[0]["card_id"]
        assert 3 <= len(burst) <= 8
        assert burst[-1]["event_time"] - burst[0]["event_time"] <= 120_000
        assert not {r["merchant_id"] for r in burst} & legit_merchants[card]
        usual = statistics.median(legit_amounts[card])
        assert statistics.median(r["amount"] for r in burst) > 2.0 * usual


def test_invalid_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="fraud_share"):
        PaymentsGenerator(seed=1, fraud_share=0.7)
    with pytest.raises(ValueError, match="merchants"):
        PaymentsGenerator(seed=1, merchants=3)
