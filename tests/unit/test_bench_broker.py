"""`streamml bench broker`: requests counted from librdkafka statistics; cost per request."""

from __future__ import annotations

import json

from services.bench.broker import RequestCost, RequestCounts, requests_by_kind


def test_request_counts_are_summed_over_every_broker_connection() -> None:
    stats = {
        "brokers": {
            "127.0.0.1:9092/bootstrap": {"req": {"Fetch": 0, "Metadata": 2}},
            "127.0.0.1:9092/111": {"req": {"Fetch": 40, "Produce": 3}},
            "GroupCoordinator": {"req": {"Heartbeat": 5, "Fetch": 1}},
        }
    }
    assert requests_by_kind(stats) == {"Fetch": 41, "Metadata": 2, "Produce": 3, "Heartbeat": 5}


def test_the_latest_statistics_replace_earlier_ones() -> None:
    counts = RequestCounts()
    for fetches in (3, 9):
        counts.update(json.dumps({"brokers": {"b/1": {"req": {"Fetch": fetches}}}}))
    assert counts.count("Fetch") == 9
    assert counts.count("Produce") == 0


def test_cost_per_request_and_cores() -> None:
    cost = RequestCost("idle fetch", requests=2_000, seconds=4.0, broker_cpu_seconds=0.5)
    assert cost.broker_ms_per_request == 0.25
    assert cost.broker_cores == 0.125
    assert RequestCost("none", 0, 0.0, 0.0).broker_ms_per_request == 0.0
