"""The scorer under kill -9: exactly one prediction per event, also for a vector seen again after
the restart (the recent event ids are rebuilt from the committed predictions)."""

from __future__ import annotations

import random
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from services.core.errors import SerializationError
from services.core.schemas import SchemaStore
from services.core.serde import Codec, CodecFactory
from services.core.settings import StackSettings
from services.stack.services import ServiceProcess, service_env
from tests.integration.helpers import TopicReader

pytestmark = pytest.mark.integration

FEATURES = "payments.features"
PREDICTIONS = "payments.predictions"
SCORER_GROUP = "streamml-scorer-payments"
VECTORS = 3000
REPEATED_IN_STREAM = 300
REPEATED_AFTER_RESTART = 200
REBUILT = re.compile(r"payments\.predictions: rebuilt (\d+) recent event ids")


def make_vectors(prefix: str, rng: random.Random) -> list[dict[str, Any]]:
    now = int(time.time() * 1000)
    return [
        {
            "event_id": f"{prefix}-{i}",
            "card_id": f"recovery-card-{prefix}-{rng.randrange(100)}",
            "merchant_id": f"recovery-m-{rng.randrange(20)}",
            "event_time": now - 600_000 + i * 100,
            "amount": round(rng.uniform(1, 400), 2),
            "txn_count_5m": rng.randrange(1, 5),
            "txn_count_1h": rng.randrange(5, 20),
            "txn_count_24h": rng.randrange(20, 80),
            "amount_sum_1h": round(rng.uniform(10, 2000), 2),
            "amount_mean_24h": round(rng.uniform(1, 400), 2),
            "amount_max_24h": round(rng.uniform(400, 900), 2),
            "seconds_since_last_txn": rng.choice((None, rng.uniform(1, 3600))),
        }
        for i in range(VECTORS)
    ]


class Publisher:
    """Publishes feature vectors and remembers the last offset written to each partition."""

    def __init__(self, stack: StackSettings, codec: Codec) -> None:
        # One record per produce request, so the scorer's batches often end up holding only
        # repeats: the case where a batch has nothing to publish but offsets to commit.
        self._producer = Producer(
            {"bootstrap.servers": stack.bootstrap, "linger.ms": 0, "batch.num.messages": 1}
        )
        self._codec = codec
        self.ends: dict[int, int] = {}

    def publish(self, vectors: list[dict[str, Any]]) -> None:
        def delivered(error: KafkaError | None, message: Message) -> None:
            assert error is None, error
            partition, offset = message.partition(), message.offset()
            assert partition is not None and offset is not None
            self.ends[partition] = max(self.ends.get(partition, -1), offset)

        for vector in vectors:
            key = str(vector["card_id"]).encode()
            self._producer.produce(FEATURES, self._codec.encode(vector), key, on_delivery=delivered)
            self._producer.poll(0)
        assert self._producer.flush(30) == 0, "not every vector was delivered"


def wait_until_consumed(stack: StackSettings, ends: dict[int, int], timeout_s: float) -> None:
    """Until the scorer's group has committed offsets past everything published."""
    consumer = Consumer(
        {
            "bootstrap.servers": stack.bootstrap,
            "group.id": SCORER_GROUP,
            "enable.auto.commit": False,
        }
    )
    wanted = [TopicPartition(FEATURES, p) for p in sorted(ends)]
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            committed = {tp.partition: tp.offset for tp in consumer.committed(wanted, timeout=10)}
            behind = {p: (committed[p], end) for p, end in ends.items() if committed[p] <= end}
            if not behind:
                return
            assert time.monotonic() < deadline, f"the scorer never caught up: {behind}"
            time.sleep(0.2)
    finally:
        consumer.close()


def predicted(values: list[bytes], codec: Codec, wanted: set[str]) -> dict[str, int]:
    """How many predictions each wanted event id has among ``values``."""
    counts: dict[str, int] = {}
    for value in values:
        try:
            event_id = str(codec.decode(value)["event_id"])
        except SerializationError:  # other tests' bytes
            continue
        if event_id in wanted:
            counts[event_id] = counts.get(event_id, 0) + 1
    return counts


def test_a_scorer_killed_mid_stream_predicts_every_event_exactly_once(
    stack: StackSettings, logs_dir: Path
) -> None:
    codecs = CodecFactory(SchemaStore.from_dir(stack.schemas_dir))
    vectors_codec = codecs.for_topic(FEATURES)
    predictions_codec = codecs.for_topic(PREDICTIONS)
    prefix = uuid.uuid4().hex[:8]
    rng = random.Random(21)
    vectors = make_vectors(prefix, rng)
    wanted = {str(v["event_id"]) for v in vectors}
    # An upstream producer's retries: some vectors twice, the copy somewhere later.
    stream = list(vectors)
    for vector in rng.sample(vectors, REPEATED_IN_STREAM):
        at = int(vector["event_id"].rsplit("-", 1)[1])
        stream.insert(rng.randrange(at + 1, len(stream) + 1), dict(vector))

    publisher = Publisher(stack, vectors_codec)
    reader = TopicReader(stack, PREDICTIONS)
    # Small batches (one transaction each): the kill lands between two of them, or inside one.
    env = service_env(
        stack,
        {"STREAMML_SCORER_BATCH_SIZE": "20", "STREAMML_SCORER_INSTANCE": f"recovery-{prefix}"},
    )
    first = ServiceProcess("scorer", env, logs_dir / "scorer-killed.log")
    try:
        reader.read_until(lambda values: False, 1.0)  # the reader joins while the scorer starts
        publisher.publish(stream)
        reader.read_until(
            lambda values: len(predicted(values, predictions_codec, wanted)) >= VECTORS // 5, 120
        )
        first.kill()  # SIGKILL: no flush, no commit
    finally:
        if first.process.poll() is None:
            first.kill()
    before_kill = set(predicted(reader.values, predictions_codec, wanted))
    assert len(before_kill) >= VECTORS // 5, "the scorer predicted too little before the kill"
    assert len(before_kill) < VECTORS, "finished before it could be killed"

    restarted_log = logs_dir / "scorer-restarted.log"
    second = ServiceProcess("scorer", env, restarted_log)
    try:
        # Vectors whose predictions were committed before the kill, seen again after it.
        again = rng.sample(sorted(before_kill), REPEATED_AFTER_RESTART)
        by_id = {str(v["event_id"]): v for v in vectors}
        publisher.publish([by_id[event_id] for event_id in again])
        wait_until_consumed(stack, publisher.ends, 120)
        reader.read_until(
            lambda values: len(predicted(values, predictions_codec, wanted)) == VECTORS, 30
        )
        reader.settle(2.0)
    finally:
        assert second.stop() == 0
        reader.close()

    counts = predicted(reader.values, predictions_codec, wanted)
    missing = wanted - set(counts)
    assert not missing, f"{len(missing)} events have no prediction, e.g. {sorted(missing)[:3]}"
    twice = sorted(event_id for event_id, n in counts.items() if n > 1)
    assert not twice, f"{len(twice)} events predicted more than once, e.g. {twice[:3]}"
    assert all(counts[event_id] == 1 for event_id in again)
    rebuilt = [int(n) for n in REBUILT.findall(restarted_log.read_text())]
    assert rebuilt, "the restarted scorer did not log a rebuild of its recent event ids"
    assert rebuilt[-1] >= len(before_kill), f"rebuilt {rebuilt[-1]} ids, {len(before_kill)} known"


def test_predictions_an_aborted_transaction_left_visible_are_not_made_again(
    stack: StackSettings, logs_dir: Path
) -> None:
    """The embedded broker shows an aborted transaction's records to read_committed readers, so
    predictions a killed scorer had sent stay visible. The next instance rebuilds its predicted
    ids from what it sees on its own topic, those included, and predicts each event once."""
    codecs = CodecFactory(SchemaStore.from_dir(stack.schemas_dir))
    vectors_codec, predictions_codec = codecs.for_topic(FEATURES), codecs.for_topic(PREDICTIONS)
    prefix = uuid.uuid4().hex[:8]
    app_id, instance = f"scorer-leak-{prefix}", "0"
    group = f"{app_id}-payments"
    vectors = make_vectors(f"leak-{prefix}", random.Random(22))[:40]
    leaked = vectors[:15]
    skip_what_others_published(stack, group)
    Publisher(stack, vectors_codec).publish(vectors)

    dead = Producer(
        {"bootstrap.servers": stack.bootstrap, "transactional.id": f"{group}-{instance}"}
    )
    dead.init_transactions(30)
    dead.begin_transaction()
    for vector in leaked:
        prediction = {
            "event_id": vector["event_id"],
            "card_id": vector["card_id"],
            "model_name": "payments-fraud",
            "model_version": "leaked",
            "score": 0.5,
            "decision": True,
            "served_by": "champion",
            "event_time": vector["event_time"],
            "predicted_at": int(time.time() * 1000),
        }
        dead.produce(PREDICTIONS, predictions_codec.encode(prediction), str(vector["card_id"]))
    dead.flush(30)
    dead.abort_transaction(30)  # as the next instance's fencing would

    wanted = {str(v["event_id"]) for v in vectors}
    reader = TopicReader(stack, PREDICTIONS)
    env = service_env(
        stack, {"STREAMML_SCORER_APP_ID": app_id, "STREAMML_SCORER_INSTANCE": instance}
    )
    scorer = ServiceProcess("scorer", env, logs_dir / "scorer-after-leak.log")
    try:
        reader.read_until(
            lambda values: len(predicted(values, predictions_codec, wanted)) == len(wanted), 120
        )
        reader.settle(2.0)
    finally:
        assert scorer.stop() == 0
        reader.close()
    counts = predicted(reader.values, predictions_codec, wanted)
    twice = sorted(event_id for event_id, n in counts.items() if n > 1)
    assert not twice, f"{len(twice)} events predicted again after the leak, e.g. {twice[:3]}"
    assert set(counts) == wanted


def skip_what_others_published(stack: StackSettings, group: str) -> None:
    """Commits a new group's offsets at the end of the features topic, so its scorer reads only
    what this test publishes (a new group would start at the beginning)."""
    consumer = Consumer(
        {"bootstrap.servers": stack.bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        partitions = consumer.list_topics(FEATURES, timeout=10).topics[FEATURES].partitions
        ends = []
        for partition in partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(FEATURES, partition), 10)
            ends.append(TopicPartition(FEATURES, partition, high))
        consumer.commit(offsets=ends, asynchronous=False)
    finally:
        consumer.close()
