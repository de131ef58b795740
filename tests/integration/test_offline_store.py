"""The feature log on real parts: featurizer -> payments.features -> sink -> parquet -> Feast.

A replayable stream of transactions goes through the featurizer; the sink writes every vector
it publishes to the Feast offline store; Feast's point-in-time join then gives, for each event,
exactly the vector served online (zero training/serving skew), for a time between two events
of a card the earlier one's, and for a time before a card's first event nothing.
"""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Consumer, TopicPartition

from services.core.domains import load_domain
from services.core.settings import StackSettings
from services.featurelog.history import training_rows
from services.featurelog.parts import log_dir
from services.stack.processes import free_port, stop_pid
from services.stack.services import ServiceProcess, service_env
from tests.integration.helpers import TopicReader, publish
from tests.outside import OutsideCodec

pytestmark = pytest.mark.integration

TRANSACTIONS = OutsideCodec("payments.transactions.avsc")
FEATURES = OutsideCodec("payments.features.avsc")
DEAD_LETTERS = OutsideCodec("dlq.avsc")
RUN = uuid.uuid4().hex[:8]
PREFIX = f"offline-card-{RUN}-"
CARDS = 10
EVENTS = 300
GARBAGE = f"not a feature vector {RUN}".encode()
FEATURE_TOPIC = "payments.features"
SINK_GROUP = "streamml-feature-log-payments"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# `streamml feature-log run` before the command is wired into the CLI: the handler itself.
SINK = """
import argparse, logging, sys
from services.cli import featurelog
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
parser = argparse.ArgumentParser()
featurelog.register(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args(["feature-log", "run", "--domain", "payments"])
sys.exit(args.handler(args))
"""


class Sink:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", SINK],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def stop(self) -> int:
        stop_pid(self.process.pid, timeout_s=20.0)
        return self.process.wait()


class Running:
    def __init__(self, featurizer: ServiceProcess, sink: Sink, metrics_port: int) -> None:
        self.featurizer = featurizer
        self.sink = sink
        self.metrics_port = metrics_port


@pytest.fixture(scope="module")
def running(stack: StackSettings, logs_dir: Path) -> Iterator[Running]:
    port = free_port()
    featurizer = ServiceProcess("featurizer", service_env(stack), logs_dir / "featurizer.log")
    sink_env = {
        "STREAMML_METRICS_PORT": str(port),
        "STREAMML_FEATURE_LOG_BATCH_ROWS": "64",  # several part files per partition
        # Only full batches are written on the way; the rest is written when SIGTERM comes.
        "STREAMML_FEATURE_LOG_FLUSH_MS": "600000",
    }
    sink = Sink(service_env(stack, sink_env), logs_dir / "feature-log.log")
    started = Running(featurizer, sink, port)
    yield started
    for process in (started.featurizer, started.sink):
        if process.process.poll() is None:
            process.stop()


def replayable_stream(seed: int) -> list[dict[str, Any]]:
    """Transactions of ten cards over 100 minutes, distinct times per card, a few out of order."""
    rng = random.Random(seed)
    base = int(time.time() * 1000) - 3 * 3_600_000
    events = [
        {
            "event_id": f"{RUN}-e{i}",
            "card_id": f"{PREFIX}{i % CARDS}",
            "merchant_id": f"m-{rng.randrange(5)}",
            "amount": round(rng.uniform(0.5, 500.0), 2),
            "currency": "EUR",
            "event_time": base + i * 20_000 + rng.randrange(1_000),
        }
        for i in range(EVENTS)
    ]
    for i in range(0, EVENTS - CARDS, 37):  # the same card's next event arrives first
        events[i], events[i + CARDS] = events[i + CARDS], events[i]
    return events


def vectors_of(values: list[bytes], wanted: set[str]) -> dict[str, dict[str, Any]]:
    found = {}
    for value in values:
        if value[: len(FEATURES.header)] == FEATURES.header:
            record = FEATURES.decode(value)
            if record["event_id"] in wanted:
                found[record["event_id"]] = record
    return found


@pytest.fixture(scope="module")
def online(stack: StackSettings, running: Running) -> dict[str, dict[str, Any]]:
    """The replayed stream's vectors as served online, by event id."""
    # First a probe, so the stream goes to a featurizer that has joined and caught up with
    # whatever earlier tests left on the shared broker.
    probe = {
        "event_id": f"{RUN}-probe",
        "card_id": f"{PREFIX}probe",
        "merchant_id": "m-1",
        "amount": 1.0,
        "currency": "EUR",
        "event_time": int(time.time() * 1000),
    }
    publish(
        stack,
        "payments.transactions",
        [(str(probe["card_id"]).encode(), TRANSACTIONS.encode(probe))],
    )
    reader = TopicReader(stack, "payments.features")
    reader.read_until(lambda values: bool(vectors_of(values, {f"{RUN}-probe"})), 180)
    assert vectors_of(reader.values, {f"{RUN}-probe"}), "the featurizer did not start"

    events = replayable_stream(seed=11)
    publish(stack, "payments.features", [(f"{PREFIX}garbage".encode(), GARBAGE)])
    publish(
        stack,
        "payments.transactions",
        [(str(e["card_id"]).encode(), TRANSACTIONS.encode(e)) for e in events],
    )
    wanted = {str(e["event_id"]) for e in events}
    reader.read_until(lambda values: len(vectors_of(values, wanted)) == len(wanted), 120)
    vectors = vectors_of(reader.values, wanted)
    reader.close()
    assert set(vectors) == wanted, f"{len(wanted - set(vectors))} events have no feature vector"
    return vectors


def test_undecodable_vectors_go_to_the_dead_letter_topic(
    stack: StackSettings, running: Running, online: dict[str, dict[str, Any]]
) -> None:
    def ours(values: list[bytes]) -> list[dict[str, Any]]:
        letters = (DEAD_LETTERS.decode(v) for v in values)
        return [
            x for x in letters if x["original_value"] == GARBAGE and x["service"] == "feature-log"
        ]

    reader = TopicReader(stack, "payments.features.dlq")
    reader.read_until(lambda values: bool(ours(values)), 60)
    letters = ours(reader.values)
    reader.close()
    assert letters, "the sink sent no dead letter for the undecodable record"
    assert letters[0]["reason"] == "undecodable"
    assert letters[0]["source_topic"] == "payments.features"

    written = 'streamml_feature_log_rows_written_total{domain="payments"}'
    deadline = time.monotonic() + 30
    metrics = ""
    while time.monotonic() < deadline and written not in metrics:
        url = f"http://127.0.0.1:{running.metrics_port}/metrics"
        metrics = urllib.request.urlopen(url, timeout=5).read().decode()
        time.sleep(0.2)
    assert written in metrics, "no batch was written"
    assert 'streamml_feature_log_dlq_total{domain="payments",reason="undecodable"} 1.0' in metrics
    assert "streamml_feature_log_write_seconds_bucket" in metrics


def logged(directory: Path) -> dict[int, set[int]]:
    """The offsets in the log, by partition (``created`` is the offset in microseconds)."""
    found: dict[int, set[int]] = {}
    for path in directory.glob("part-*.parquet"):
        partition = int(path.name.split("-")[1])
        created = pq.read_table(path, columns=["created"]).column("created").to_pylist()
        found.setdefault(partition, set()).update(
            (c - EPOCH) // timedelta(microseconds=1) for c in created
        )
    return found


def logged_event_ids(directory: Path) -> set[str]:
    if not any(directory.glob("part-*.parquet")):
        return set()
    return set(pq.read_table(directory, columns=["event_id"]).column("event_id").to_pylist())


def committed_offsets(stack: StackSettings) -> dict[int, tuple[int, int, set[int]]]:
    """(committed, end, offsets of records) per partition of payments.features for the sink's
    group. The featurizer writes transactionally, so some offsets hold commit markers, not
    records. The end is found by reading: the embedded broker's watermark offsets are not exact.
    """
    reader = Consumer(
        {
            "bootstrap.servers": stack.bootstrap,
            "group.id": SINK_GROUP,
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 2,
        }
    )
    try:
        topic = reader.list_topics(FEATURE_TOPIC, timeout=10).topics[FEATURE_TOPIC]
        partitions = [TopicPartition(FEATURE_TOPIC, p) for p in topic.partitions]
        committed = {tp.partition: tp.offset for tp in reader.committed(partitions, timeout=10)}
        reader.assign([TopicPartition(FEATURE_TOPIC, p, 0) for p in topic.partitions])
        end = dict.fromkeys(committed, 0)
        records: dict[int, set[int]] = {p: set() for p in committed}
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 1.5:
            for message in reader.consume(500, 0.1):
                if message.error() is None:
                    partition, offset = int(message.partition() or 0), int(message.offset() or 0)
                    end[partition] = offset + 1
                    records[partition].add(offset)
                    idle_since = time.monotonic()
        return {p: (committed[p], end[p], records[p]) for p in committed}
    finally:
        reader.close()


def test_sigterm_writes_what_was_read_before_committing_it_and_a_restart_goes_on(
    stack: StackSettings, running: Running, logs_dir: Path, online: dict[str, dict[str, Any]]
) -> None:
    time.sleep(3.0)  # the sink has read everything by now, the last part not written yet
    assert running.sink.stop() == 0
    directory = log_dir(stack, load_domain(stack.features_dir, "payments"))
    assert not [p.name for p in directory.iterdir() if p.name.startswith(".")]
    written = logged(directory)
    for partition, (committed, end, records) in committed_offsets(stack).items():
        assert committed >= end, f"partition {partition}: committed {committed} of {end}"
        unwritten = records - written.get(partition, set())
        # At most the undecodable record the dead-letter test published, which has no row.
        assert len(unwritten) <= 1, f"partition {partition}: committed, not written: {unwritten}"
    assert set(online) <= logged_event_ids(directory)

    # A new instance starts from the committed offsets and adds what comes after them.
    running.sink = Sink(
        service_env(stack, {"STREAMML_FEATURE_LOG_FLUSH_MS": "200"}),
        logs_dir / "feature-log.log",
    )
    now = int(time.time() * 1000)
    more = [  # other cards: the replayed stream's cards keep their history as it was
        {
            "event_id": f"{RUN}-after-{i}",
            "card_id": f"{PREFIX}after-{i % 5}",
            "merchant_id": "m-1",
            "amount": 10.0 + i,
            "currency": "EUR",
            "event_time": now - 60_000 + i * 100,
        }
        for i in range(20)
    ]
    publish(
        stack,
        "payments.transactions",
        [(str(e["card_id"]).encode(), TRANSACTIONS.encode(e)) for e in more],
    )
    ids = {str(e["event_id"]) for e in more}
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not ids <= logged_event_ids(directory):
        time.sleep(0.2)
    assert ids <= logged_event_ids(directory), "the restarted sink did not log the new vectors"


def same(offline: Any, online: Any) -> bool:
    """Equal, exactly; a null online is a null offline."""
    if online is None:
        return bool(pd.isna(offline))
    return not pd.isna(offline) and offline == online


def at(moment: datetime, delta_ms: int = 0) -> pd.Timestamp:
    return pd.Timestamp(moment) + pd.Timedelta(milliseconds=delta_ms)


def test_offline_rows_equal_the_vectors_served_online(
    stack: StackSettings, online: dict[str, dict[str, Any]]
) -> None:
    domain = load_domain(stack.features_dir, "payments")
    names = [f.name for f in domain.features_of(domain.key_entity)]
    # Each event as of its own time; between two events of a card; before a card's first.
    queries: list[tuple[str, pd.Timestamp, str | None]] = []
    by_card: dict[str, list[dict[str, Any]]] = {}
    for vector in online.values():
        by_card.setdefault(vector["card_id"], []).append(vector)
        queries.append((vector["card_id"], at(vector["event_time"]), vector["event_id"]))
    for card, vectors in by_card.items():
        vectors.sort(key=lambda v: v["event_time"])
        queries.append((card, at(vectors[0]["event_time"], -1), None))
        for earlier, later in itertools.pairwise(vectors):
            gap_ms = (later["event_time"] - earlier["event_time"]) // timedelta(milliseconds=1)
            queries.append((card, at(earlier["event_time"], gap_ms // 2), earlier["event_id"]))
    entity_df = pd.DataFrame(queries, columns=["card_id", "event_timestamp", "expected"])
    rows = training_rows(stack, domain, entity_df)

    assert len(rows) == len(queries) == 2 * EVENTS
    skewed = []
    for row in rows.itertuples(index=False):
        expected = online[row.expected] if row.expected is not None else dict.fromkeys(names)
        if not all(same(getattr(row, n), expected[n]) for n in names):
            skewed.append((row.card_id, row.event_timestamp, row.expected))
    assert not skewed, f"{len(skewed)} offline rows differ from the online vectors: {skewed[:3]}"
    # Not vacuous: only the queries from before a card's first event found no vector.
    assert rows["txn_count_24h"].isna().sum() == CARDS
    assert rows["txn_count_24h"].max() > 1 and rows["seconds_since_last_txn"].notna().any()


def test_the_services_stop_cleanly(running: Running) -> None:
    assert running.sink.stop() == 0
    assert running.featurizer.stop() == 0
