"""A transaction that fails mid-stream is recovered from in the process: a new consumer starts
at the committed offsets and the batch runs again, so every input gets exactly one output."""

from __future__ import annotations

import time
import uuid
from collections import Counter

import pytest
from confluent_kafka import Consumer

from services.core.kafka import TopicSpec, consumer_config, create_topics, producer_config
from services.core.settings import StackSettings
from services.core.transactions import TransactionalProducer, TransactionFailed, next_offsets
from tests.integration.helpers import TopicReader, publish

pytestmark = pytest.mark.integration

RECORDS = 600
# The sink refuses records over this size: the first batch sends one, which fails its
# transaction the way a lost partition leader would (a record the broker did not take).
SINK_MAX_BYTES = 2_000


def test_a_batch_whose_transaction_failed_runs_again_once(stack: StackSettings) -> None:
    run = uuid.uuid4().hex[:8]
    source, sink = f"txn-in-{run}", f"txn-out-{run}"
    create_topics(
        stack,
        [TopicSpec(source, 2), TopicSpec(sink, 2, {"max.message.bytes": str(SINK_MAX_BYTES)})],
    )
    publish(stack, source, [(f"k{i}".encode(), f"v{i}".encode()) for i in range(RECORDS)])
    consumer = Consumer(consumer_config(stack, f"txn-test-{run}"))
    producer = TransactionalProducer(
        producer_config(stack, **{"transactional.id": f"txn-test-{run}"}),
        consumer,
    )
    producer.init()
    consumer.subscribe([source])
    failures: list[TransactionFailed] = []
    consumers = [consumer]

    def resubscribe() -> Consumer:
        consumers.append(Consumer(consumer_config(stack, f"txn-test-{run}")))
        consumers[-1].subscribe([source])
        return consumers[-1]

    consumed = 0
    deadline = time.monotonic() + 60
    try:
        while consumed < RECORDS and time.monotonic() < deadline:
            messages = [m for m in consumer.consume(100, 0.5) if m.error() is None]
            if not messages:
                continue
            try:
                with producer.batch(
                    next_offsets((m.topic(), m.partition(), m.offset()) for m in messages)
                ):
                    for message in messages:
                        producer.send(sink, message.key(), message.value() + b"!")
                    if not failures:
                        producer.send(sink, b"too-large", b"x" * 2 * SINK_MAX_BYTES)
            except TransactionFailed as failure:
                failures.append(failure)
                consumer = producer.recover(resubscribe, lambda: True)
                continue
            consumed += len(messages)
    finally:
        consumer.close()
        producer.flush()

    assert len(failures) == 1, "the first batch's transaction failed, and only it"
    assert len(consumers) == 2 and consumer is consumers[1], "the consumer was replaced once"
    reader = TopicReader(stack, sink)
    values = reader.read_until(lambda found: len(found) >= RECORDS, 30)
    reader.settle(1.0)
    reader.close()
    counts = Counter(values)
    assert set(counts) == {f"v{i}!".encode() for i in range(RECORDS)}, "an input got no output"
    assert max(counts.values()) == 1, "an input got two outputs"
