"""The feature log without a broker: batching, part files, the sink's order of work, history."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from services.core.declarations import Domain
from services.core.errors import ConfigError
from services.core.serde import CodecFactory
from services.core.settings import StackSettings
from services.featurelog.batch import PendingBatch
from services.featurelog.parts import (
    CREATED,
    arrow_schema,
    log_dir,
    log_row,
    part_name,
    prepare_dir,
    write_part,
)
from services.featurelog.settings import FeatureLogSettings
from services.featurelog.sink import FeatureLogSink
from tests.expected import CARD_FEATURES
from tests.outside import OutsideCodec

BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
FEATURES = OutsideCodec("payments.features.avsc")
DEAD_LETTERS = OutsideCodec("dlq.avsc")


def vector(card: str, event_id: str, at_ms: int, n: int, since: float | None) -> dict[str, Any]:
    """A payments.features record whose counts are all ``n`` and amounts ``n + 0.5``."""
    return {
        "event_id": event_id,
        "card_id": card,
        "merchant_id": "m-1",
        "event_time": at_ms,
        "amount": 1.0,
        "txn_count_5m": n,
        "txn_count_1h": n,
        "txn_count_24h": n,
        "amount_sum_1h": n + 0.5,
        "amount_mean_24h": n + 0.5,
        "amount_max_24h": n + 0.5,
        "seconds_since_last_txn": since,
    }


def test_part_files_are_named_by_partition_and_first_offset() -> None:
    assert part_name(3, 1200) == "part-3-1200.parquet"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_batch_is_due_when_full_or_when_its_oldest_record_is_old_enough() -> None:
    clock = FakeClock()
    pending = PendingBatch(max_rows=3, max_age_s=1.0, clock=clock)
    assert not pending.due() and pending.seconds_left() is None and pending.room() == 3
    pending.add(0, 10, {"n": 1})
    clock.now += 0.4
    pending.add(0, 11, {"n": 2})
    assert not pending.due() and pending.seconds_left() == pytest.approx(0.6)
    assert pending.room() == 1
    pending.skip(1, 7)  # a dead letter: counted and committed, not written
    assert pending.due()
    batch = pending.take()
    assert batch.rows == {0: [{"n": 1}, {"n": 2}]} and batch.first_offsets == {0: 10}
    assert batch.next_offsets == {0: 12, 1: 8} and batch.records == 3 and batch.row_count == 2
    assert pending.records == 0 and not pending.due()

    pending.add(2, 5, {"n": 3})
    clock.now += 0.99
    assert not pending.due()
    clock.now += 0.01
    assert pending.due(), "a batch must not wait longer than its time bound"


def test_a_part_file_has_the_declared_columns_and_keeps_nulls(
    tmp_path: Path, payments: Domain, codecs: CodecFactory
) -> None:
    codec = codecs.for_topic("payments.features")
    first = codec.decode(FEATURES.encode(vector("c-1", "e-1", BASE_MS, 1, None)))
    second = codec.decode(FEATURES.encode(vector("c-1", "e-2", BASE_MS + 1500, 2, 1.5)))
    rows = [log_row(payments, first, 40), log_row(payments, second, 41)]
    path = write_part(tmp_path, 2, 40, rows, arrow_schema(payments))
    assert path == tmp_path / "part-2-40.parquet"
    assert sorted(os.listdir(tmp_path)) == ["part-2-40.parquet"], "no temporary file is left"

    table = pq.read_table(path)
    assert table.schema.names == [
        "card_id",
        "event_time",
        CREATED,
        "event_id",
        *CARD_FEATURES,
    ]
    assert table.schema.field("event_time").type == pa.timestamp("ms", tz="UTC")
    assert table.schema.field(CREATED).type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("txn_count_5m").type == pa.int64()
    assert table.schema.field("seconds_since_last_txn").type == pa.float64()
    data = table.to_pylist()
    assert data[0]["event_time"] == datetime(2026, 1, 1, tzinfo=UTC)
    assert data[0]["seconds_since_last_txn"] is None and data[1]["seconds_since_last_txn"] == 1.5
    assert [r["event_id"] for r in data] == ["e-1", "e-2"]
    assert data[0][CREATED] < data[1][CREATED], "created follows the offsets"


def test_a_part_of_only_nulls_keeps_its_column_types(tmp_path: Path, payments: Domain) -> None:
    row = log_row(payments, vector("c-1", "e-1", BASE_MS, 1, None), 0)
    path = write_part(tmp_path, 0, 0, [row], arrow_schema(payments))
    assert pq.read_table(path).schema.field("seconds_since_last_txn").type == pa.float64()


def test_a_failed_write_leaves_only_whole_files_behind(
    tmp_path: Path, payments: Domain, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dask.dataframe as dd

    schema = arrow_schema(payments)
    write_part(tmp_path, 0, 0, [log_row(payments, vector("c", "e-0", BASE_MS, 1, None), 0)], schema)
    (tmp_path / ".part-0-7.parquet.tmp").write_bytes(b"half a file from a crash")

    def fail(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_part(
            tmp_path, 0, 1, [log_row(payments, vector("c", "e-1", BASE_MS, 2, 1), 1)], schema
        )
    monkeypatch.undo()
    assert not (tmp_path / "part-0-1.parquet").exists()
    assert not (tmp_path / ".part-0-1.parquet.tmp").exists()
    # Feast reads the directory with dask: hidden files, whole or not, are not part of it.
    assert list(dd.read_parquet(str(tmp_path)).compute()["event_id"]) == ["e-0"]


def test_rewriting_a_batch_replaces_its_file(tmp_path: Path, payments: Domain) -> None:
    schema = arrow_schema(payments)
    row = log_row(payments, vector("c", "e-0", BASE_MS, 1, None), 5)
    write_part(tmp_path, 1, 5, [row], schema)
    write_part(tmp_path, 1, 5, [row], schema)
    assert os.listdir(tmp_path) == ["part-1-5.parquet"]


def test_the_log_path_must_be_a_directory(tmp_path: Path) -> None:
    taken = tmp_path / "card.parquet"
    taken.write_bytes(b"an old single-file log")
    with pytest.raises(ConfigError, match="is a file"):
        prepare_dir(taken)
    prepare_dir(tmp_path / "new" / "card.parquet")
    assert (tmp_path / "new" / "card.parquet").is_dir()


@dataclass
class FakeMessage:
    partition_: int
    offset_: int
    value_: bytes | None
    key_: bytes = b"c-1"

    def topic(self) -> str:
        return "payments.features"

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def key(self) -> bytes:
        return self.key_

    def value(self) -> bytes | None:
        return self.value_

    def error(self) -> None:
        return None


class FakeProducer:
    def __init__(self) -> None:
        self.waiting: list[tuple[str, bytes, Any]] = []
        self.delivered: list[tuple[str, bytes]] = []

    def produce(self, topic: str, key: bytes, value: bytes, on_delivery: Any) -> None:
        self.waiting.append((topic, value, on_delivery))

    def flush(self, _timeout: float) -> int:
        for topic, value, on_delivery in self.waiting:
            self.delivered.append((topic, value))
            on_delivery(None, None)
        self.waiting = []
        return 0


class FakeConsumer:
    """Hands out prepared polls; when they run out, asks the sink to stop (as SIGTERM does)."""

    def __init__(self, polls: list[list[FakeMessage]], directory: Path, producer: FakeProducer):
        self.polls = polls
        self.directory = directory
        self.producer = producer
        self.sink: FeatureLogSink | None = None
        self.commits: list[dict[int, int]] = []
        self.closed = False

    def subscribe(self, topics: list[str], on_revoke: Any) -> None:
        assert topics == ["payments.features"]

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        assert 0 <= timeout <= 0.5
        if not self.polls:
            assert self.sink is not None
            self.sink.stop()
            return []
        assert len(self.polls[0]) <= num_messages
        return self.polls.pop(0)

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        assert not asynchronous
        assert not self.producer.waiting, "offsets committed before the dead letters went out"
        files = set(os.listdir(self.directory))
        assert not any(name.startswith(".") for name in files)
        self.commits.append({tp.partition: tp.offset for tp in offsets})
        self.commits[-1]["files"] = len(files)

    def close(self) -> None:
        self.closed = True


def test_the_sink_writes_each_batch_before_committing_it_and_dead_letters_garbage(
    tmp_path: Path, payments: Domain, codecs: CodecFactory
) -> None:
    def good(partition: int, offset: int) -> FakeMessage:
        record = vector(f"c-{partition}", f"e-{partition}-{offset}", BASE_MS + offset, offset, None)
        return FakeMessage(partition, offset, FEATURES.encode(record))

    polls = [
        [good(0, 0), good(0, 1), FakeMessage(1, 0, b"not avro")],
        [good(0, 2), good(1, 1), good(0, 3)],
        [good(0, 4)],
    ]
    settings = FeatureLogSettings(home=tmp_path, feature_log_batch_rows=3)
    directory = log_dir(settings, payments)
    producer = FakeProducer()
    consumer = FakeConsumer(polls, directory, producer)
    registry = CollectorRegistry()
    sink = FeatureLogSink(
        settings, payments, codecs, registry, consumer=consumer, producer=producer
    )
    consumer.sink = sink
    sink.run()

    assert consumer.closed
    assert consumer.commits == [
        {0: 2, 1: 1, "files": 1},
        {0: 4, 1: 2, "files": 3},
        {0: 5, "files": 4},
    ]
    assert sorted(os.listdir(directory)) == [
        "part-0-0.parquet",
        "part-0-2.parquet",
        "part-0-4.parquet",
        "part-1-1.parquet",
    ]
    assert pq.read_table(directory / "part-0-2.parquet").column("event_id").to_pylist() == [
        "e-0-2",
        "e-0-3",
    ]
    [(topic, value)] = producer.delivered
    letter = DEAD_LETTERS.decode(value)
    assert topic == "payments.features.dlq" and letter["service"] == "feature-log"
    assert letter["reason"] == "undecodable" and letter["original_value"] == b"not avro"
    assert (letter["source_partition"], letter["source_offset"]) == (1, 0)

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(f"streamml_feature_log_{name}", labels)

    assert sample("rows_written_total", domain="payments") == 6
    assert sample("files_written_total", domain="payments") == 4
    assert sample("write_seconds_count", domain="payments") == 4
    assert sample("dlq_total", domain="payments", reason="undecodable") == 1


@pytest.fixture
def offline_settings(tmp_path: Path, payments: Domain) -> Iterator[StackSettings]:
    """A Feast registry of its own; Redis is named but never reached by offline reads."""
    from services.featurestore.store import apply_declarations

    settings = StackSettings(
        home=tmp_path / "home",
        kafka_bootstrap="127.0.0.1:1",
        redis_url=SecretStr("redis://127.0.0.1:1/0"),
    )
    apply_declarations(settings, [payments])
    yield settings


def test_training_rows_are_the_logged_vectors_as_of_each_time(
    offline_settings: StackSettings, payments: Domain
) -> None:
    from services.featurelog.history import training_rows

    schema = arrow_schema(payments)
    directory = log_dir(offline_settings, payments)
    with pytest.raises(ConfigError, match="no part files"):
        training_rows(
            offline_settings, payments, pd.DataFrame(columns=["card_id", "event_timestamp"])
        )
    prepare_dir(directory)
    card_a = [vector("a", "a-0", BASE_MS, 1, None), vector("a", "a-1", BASE_MS + 60_000, 2, 60.0)]
    card_b = [vector("b", "b-0", BASE_MS + 30_000, 7, None)]
    write_part(directory, 0, 0, [log_row(payments, v, i) for i, v in enumerate(card_a)], schema)
    write_part(directory, 1, 0, [log_row(payments, card_b[0], 0)], schema)

    def at(ms: int) -> pd.Timestamp:
        return pd.Timestamp(ms, unit="ms", tz="UTC")

    entity_df = pd.DataFrame(
        {
            "card_id": ["a", "a", "a", "b", "a", "zzz", "a", "a"],
            "event_timestamp": [
                at(BASE_MS + 60_000),  # a's second event itself
                at(BASE_MS + 59_999),  # between a's two events: the first one's row
                at(BASE_MS - 1),  # before a's first event: nothing yet
                at(BASE_MS + 30_000),
                at(BASE_MS),
                at(BASE_MS),  # a card the log has never seen
                at(BASE_MS + 60_000 + 26 * 3_600_000),  # beyond the 25 h ttl
                at(BASE_MS + 60_000),  # a repeated row is answered again
            ],
            "label": list(range(8)),
        },
        index=[f"r{i}" for i in range(8)],
    )
    rows = training_rows(offline_settings, payments, entity_df)

    assert list(rows.index) == list(entity_df.index) and list(rows["label"]) == list(range(8))
    assert str(rows["txn_count_5m"].dtype) == "Int64"
    assert str(rows["seconds_since_last_txn"].dtype) == "Float64"
    counts = [None if pd.isna(v) else int(v) for v in rows["txn_count_24h"]]
    assert counts == [2, 1, None, 7, 1, None, None, 2]
    since = [None if pd.isna(v) else float(v) for v in rows["seconds_since_last_txn"]]
    assert since == [60.0, None, None, None, None, None, None, 60.0]
    assert rows.loc["r3", "amount_max_24h"] == 7.5 and rows.loc["r0", "amount_mean_24h"] == 2.5

    naive = entity_df.assign(event_timestamp=entity_df["event_timestamp"].dt.tz_localize(None))
    from_naive = training_rows(offline_settings, payments, naive)
    assert from_naive.drop(columns="event_timestamp").equals(
        rows.drop(columns="event_timestamp")
    ), "a naive timestamp means UTC"
    with pytest.raises(ValueError, match="event_timestamp"):
        training_rows(
            offline_settings, payments, entity_df.rename(columns={"event_timestamp": "t"})
        )
