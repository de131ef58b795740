"""Consume-transform-produce with confluent-kafka transactions, one place for every service.

A batch's outputs and the offsets it consumed are committed together, so a read_committed
consumer sees each output once, also when the service dies between two batches: what it had
produced for an unfinished batch is aborted, and the batch is consumed again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

log = logging.getLogger(__name__)

TRANSACTION_TIMEOUT_S = 30.0
# A transaction's first request after the previous commit is refused (CONCURRENT_TRANSACTIONS)
# until Kafka has written that commit's markers, and librdkafka retries after retry.backoff.ms:
# its 100 ms default made every back-to-back micro-batch wait about 95 ms for
# send_offsets_to_transaction, 1 ms makes it about 5 ms (measured on Kafka 4.4, one node,
# 12 partitions a transaction). Later retries still back off exponentially.
RETRY_BACKOFF_MS = 1
_QUEUE_FULL_WAIT_S = 0.05


class TransactionalProducer:
    """A transactional producer whose batches commit the consumer's offsets with them."""

    def __init__(self, config: Mapping[str, Any], consumer: Consumer) -> None:
        if "transactional.id" not in config:
            raise ValueError("a transactional producer needs a transactional.id")
        self._producer = Producer({"retry.backoff.ms": RETRY_BACKOFF_MS, **config})
        self._consumer = consumer
        self._sent = 0

    def init(self) -> None:
        """Fences an earlier producer with the same id and aborts what it left open."""
        self._producer.init_transactions(TRANSACTION_TIMEOUT_S)

    @contextmanager
    def batch(self, offsets: Iterable[TopicPartition]) -> Iterator[None]:
        """Everything sent inside commits with ``offsets`` (the next ones to read), or, on any
        error, is aborted and the error raised."""
        self._producer.begin_transaction()
        self._sent = 0
        try:
            yield
            if self._sent:
                self._producer.send_offsets_to_transaction(
                    list(offsets), self._consumer.consumer_group_metadata(), TRANSACTION_TIMEOUT_S
                )
                self._commit()
            else:
                # Nothing to publish (say, a batch of duplicates): the embedded broker does not
                # apply the offsets of a transaction without records, so they are committed
                # directly. Nothing else is in flight: every earlier batch has committed.
                self._producer.abort_transaction(TRANSACTION_TIMEOUT_S)
                self._consumer.commit(offsets=list(offsets), asynchronous=False)
        except BaseException:
            self._abort()
            raise

    def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int = -1) -> None:
        self._sent += 1
        while True:
            try:
                self._producer.produce(topic, value, key, partition)
                return
            except BufferError:  # librdkafka's queue is full: let it drain
                self._producer.poll(_QUEUE_FULL_WAIT_S)

    def flush(self) -> None:
        self._producer.flush(TRANSACTION_TIMEOUT_S)

    def _commit(self) -> None:
        while True:
            try:
                self._producer.commit_transaction(TRANSACTION_TIMEOUT_S)
                return
            except KafkaException as exc:
                if not exc.args[0].retriable():
                    raise

    def _abort(self) -> None:
        try:
            self._producer.abort_transaction(TRANSACTION_TIMEOUT_S)
        except KafkaException as exc:
            log.error("aborting the transaction failed too: %s", exc)


def next_offsets(positions: Iterable[tuple[str, int, int]]) -> list[TopicPartition]:
    """The offsets to commit after consuming records at (topic, partition, offset)."""
    latest: dict[tuple[str, int], int] = {}
    for topic, partition, offset in positions:
        key = (topic, partition)
        latest[key] = max(latest.get(key, -1), offset)
    return [TopicPartition(t, p, o + 1) for (t, p), o in latest.items()]
