"""Online-store writes: batched, and an older value never overwrites a newer one, in any order."""

from __future__ import annotations

import uuid

import pytest

from services.core.settings import StackSettings
from services.features.store import open_store
from services.featurizer.online import OnlineBuffer, OnlineRow, write_rows

pytestmark = pytest.mark.integration

VIEW = "payments_card_features"


def row(card: str, at_ms: int, count: int) -> OnlineRow:
    values = {
        "txn_count_5m": count,
        "txn_count_1h": count,
        "txn_count_24h": count,
        "amount_sum_1h": 1.0,
        "amount_mean_24h": 1.0,
        "amount_max_24h": 1.0,
        "seconds_since_last_txn": None,
    }
    return OnlineRow("card_id", card, at_ms, values)


def online_count(stack: StackSettings, card: str) -> object:
    response = open_store(stack).get_online_features(
        features=[f"{VIEW}:txn_count_24h"], entity_rows=[{"card_id": card}]
    )
    return response.to_dict()["txn_count_24h"][0]


def test_an_older_write_landing_later_does_not_replace_a_newer_value(stack: StackSettings) -> None:
    store = open_store(stack)
    card = f"order-{uuid.uuid4().hex[:8]}"
    newer, older = OnlineBuffer(), OnlineBuffer()
    newer.add(VIEW, row(card, 1_767_225_660_000, 7))
    older.add(VIEW, row(card, 1_767_225_600_000, 3))
    assert write_rows(store, newer.take()) == 1
    assert write_rows(store, older.take()) == 1  # a slow flush from before lands last
    assert online_count(stack, card) == 7


def test_a_batch_keeps_only_each_entitys_newest_row(stack: StackSettings) -> None:
    store = open_store(stack)
    cards = [f"batch-{uuid.uuid4().hex[:8]}-{i}" for i in range(50)]
    buffer = OnlineBuffer()
    for i, card in enumerate(cards):
        buffer.add(VIEW, row(card, 1_767_225_600_000 + 5_000, i + 100))
        buffer.add(VIEW, row(card, 1_767_225_600_000, i))  # arrives after, but older
    assert write_rows(store, buffer.take()) == len(cards)  # one row per card, one call per view
    assert [online_count(stack, c) for c in cards[:3]] == [100, 101, 102]
