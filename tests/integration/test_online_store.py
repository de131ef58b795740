"""Online-store writes: batched, read back by Feast, and never an older value over a newer one."""

from __future__ import annotations

import socket
import uuid
from typing import Any

import pytest
import redis

from services.core.domains import load_domain
from services.core.settings import StackSettings
from services.featurestore.redis_layout import layout_for, view_layouts
from services.featurestore.store import open_store
from services.featurizer.online import OnlineBuffer, OnlineRow, OnlineWriter
from services.scorer.online import OnlineFeatureReader, OnlineStoreUnavailable

pytestmark = pytest.mark.integration

VIEW = "payments_card_features"
ONLINE = "merchant_txn_count_1h"
T0 = 1_767_225_600_000


def row(card: str, at_ms: int, count: int, since: float | None = None) -> OnlineRow:
    values = {  # all different, so a value under another feature's field would show
        "txn_count_5m": count + 20,
        "txn_count_1h": count + 10,
        "txn_count_24h": count,
        "amount_sum_1h": 1.5,
        "amount_mean_24h": 0.25,
        "amount_max_24h": 7.0,
        "seconds_since_last_txn": since,
    }
    return OnlineRow(card, at_ms, values)


@pytest.fixture
def writer(stack: StackSettings) -> OnlineWriter:
    domain = load_domain(stack.features_dir, "payments")
    client = redis.Redis.from_url(stack.redis)
    return OnlineWriter(client, layout_for(open_store(stack)), view_layouts([domain]))


def online(stack: StackSettings, card: str) -> dict[str, Any]:
    response = open_store(stack).get_online_features(
        features=[f"{VIEW}:{name}" for name in row("x", 0, 0).values],
        entity_rows=[{"card_id": card}],
    )
    return {k: v[0] for k, v in response.to_dict().items() if k != "card_id"}


def write(writer: OnlineWriter, *rows: OnlineRow) -> int:
    buffer = OnlineBuffer()
    for r in rows:
        buffer.add(VIEW, r)
    return writer.write(buffer.take())


def test_feast_reads_every_value_we_write(stack: StackSettings, writer: OnlineWriter) -> None:
    card, other = f"read-{uuid.uuid4().hex[:8]}", f"read-{uuid.uuid4().hex[:8]}"
    assert write(writer, row(card, T0, 3, since=12.5), row(other, T0, 4)) == 2
    assert online(stack, card) == {**row(card, T0, 3, since=12.5).values}
    assert online(stack, other)["seconds_since_last_txn"] is None
    assert online(stack, other)["txn_count_24h"] == 4


def test_an_older_write_landing_later_does_not_replace_a_newer_value(
    stack: StackSettings, writer: OnlineWriter
) -> None:
    card = f"order-{uuid.uuid4().hex[:8]}"
    assert write(writer, row(card, T0 + 60_000, 7)) == 1
    assert write(writer, row(card, T0, 3)) == 0  # a slow write from before lands last
    assert online(stack, card)["txn_count_24h"] == 7
    assert write(writer, row(card, T0 + 60_001, 8)) == 1  # a newer one still lands
    assert online(stack, card)["txn_count_24h"] == 8


def test_feasts_own_writes_are_ordered_against_ours(
    stack: StackSettings, writer: OnlineWriter
) -> None:
    """The comparison reads the timestamp Feast stores, so the two writers agree on order."""
    import pandas as pd

    card = f"feast-{uuid.uuid4().hex[:8]}"
    frame = pd.DataFrame(
        [
            {
                "card_id": card,
                "event_time": pd.Timestamp(T0 + 120_000, unit="ms", tz="UTC"),
                **row(card, 0, 9, since=1.0).values,
            }
        ]
    )
    open_store(stack).write_to_online_store(VIEW, frame)
    assert write(writer, row(card, T0 + 60_000, 3)) == 0
    assert online(stack, card)["txn_count_24h"] == 9
    assert write(writer, row(card, T0 + 180_000, 4)) == 1
    assert online(stack, card)["txn_count_24h"] == 4


def test_a_batch_keeps_only_each_entitys_newest_row(
    stack: StackSettings, writer: OnlineWriter
) -> None:
    cards = [f"batch-{uuid.uuid4().hex[:8]}-{i}" for i in range(50)]
    buffer = OnlineBuffer()
    for i, card in enumerate(cards):
        buffer.add(VIEW, row(card, T0 + 5_000, i + 100))
        buffer.add(VIEW, row(card, T0, i))  # arrives after, but older
    assert len(buffer) == len(cards)
    assert writer.write(buffer.take()) == len(cards)
    assert [online(stack, c)["txn_count_24h"] for c in cards[:3]] == [100, 101, 102]


def test_the_scorer_reads_the_declared_fill_for_an_entity_without_an_event_in_the_window(
    stack: StackSettings,
) -> None:
    """A merchant never seen, or whose row is older than the 1 h window, counts 0 (its fill);
    a row within the window is read as written."""
    domain = load_domain(stack.features_dir, "payments")
    client = redis.Redis.from_url(stack.redis)
    merchants = OnlineWriter(client, layout_for(open_store(stack)), view_layouts([domain]))
    buffer = OnlineBuffer()
    prefix = uuid.uuid4().hex[:8]
    hour_ms = 3_600_000
    recent, idle = f"fill-recent-{prefix}", f"fill-idle-{prefix}"
    buffer.add("payments_merchant_features", OnlineRow(recent, T0 - hour_ms + 1, {ONLINE: 5}))
    buffer.add("payments_merchant_features", OnlineRow(idle, T0 - hour_ms, {ONLINE: 7}))
    merchants.write(buffer.take())
    reader = OnlineFeatureReader(client, layout_for(open_store(stack)), domain)
    vectors: list[dict[str, Any]] = [
        {"merchant_id": m, "event_time": T0} for m in (recent, idle, f"fill-never-{prefix}")
    ]
    reader.enrich(vectors)
    assert [v[ONLINE] for v in vectors] == [5, 0, 0]


def test_an_unreachable_store_is_an_error_the_scorer_can_name(stack: StackSettings) -> None:
    domain = load_domain(stack.features_dir, "payments")
    with socket.socket() as holder:  # a port nobody answers on
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
    client = redis.Redis(port=port, socket_connect_timeout=1, socket_timeout=1)
    reader = OnlineFeatureReader(client, layout_for(open_store(stack)), domain)
    with pytest.raises(OnlineStoreUnavailable, match="could not be read"):
        reader.enrich([{"merchant_id": "m", "event_time": T0}])
