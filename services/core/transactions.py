"""Consume-transform-produce with confluent-kafka transactions, one place for every service.

A batch's outputs and the offsets it consumed are committed together, so a read_committed
consumer sees each output once, also when the service dies between two batches: what it had
produced for an unfinished batch is aborted, and the batch is consumed again.

A batch whose transaction fails (a broker lost mid-commit, a coordinator moving) does not stop
the service: ``batch()`` raises ``TransactionFailed``, and the service calls ``recover()``, which
replaces the producer and the consumer. The new consumer joins the group and starts each
partition at its committed offset, and the service's ``on_assign`` rebuilds whatever state it
keeps as of that commit. No output is lost (the batch runs again) and none is doubled (its first
attempt never committed, or committed with its offsets).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from services.core.errors import StackError

log = logging.getLogger(__name__)

# How long one transaction's commit (its offsets, then the commit itself) may take before the
# producer is given up and replaced. A broker lost on the local cluster has its partitions and
# coordinators moved in 3-6 s.
TRANSACTION_TIMEOUT_S = 30.0
# A transaction's first request after the previous commit is refused (CONCURRENT_TRANSACTIONS)
# until Kafka has written that commit's markers, and librdkafka retries after retry.backoff.ms:
# its 100 ms default made every back-to-back micro-batch wait about 95 ms for
# send_offsets_to_transaction, 1 ms makes it about 5 ms (measured on Kafka 4.4, one node,
# 12 partitions a transaction). Later retries still back off exponentially.
RETRY_BACKOFF_MS = 1
_QUEUE_FULL_WAIT_S = 0.05
RECOVERY_RETRY_S = 1.0

T = TypeVar("T")


class TransactionFailed(StackError):
    """A micro-batch's transaction was aborted, or its commit got no answer (then it may have
    committed or not). Either way the committed offsets say where to resume: the service
    recovers (``TransactionalProducer.recover``) and consumes from there again."""


class CallTimedOut(TimeoutError):
    """A blocking client call that did not return in time; it is left running, abandoned."""


class BlockingCalls:
    """Runs blocking librdkafka calls on a daemon thread, each with a deadline of our own.

    librdkafka's transactional calls can block past the timeout they are given (it is never
    checked while the group coordinator is being looked up: confluentinc/librdkafka#5456, and a
    coordinator that left the cluster is waited for forever: #5511). A call past its deadline
    is abandoned with its thread, which ends if the call ever returns; the next call gets a
    new thread.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] | None = None

    def call(self, function: Callable[[], T], timeout_s: float) -> T:
        if self._jobs is None:
            self._jobs = queue.SimpleQueue()
            threading.Thread(
                target=_run_jobs, args=(self._jobs,), name=self._name, daemon=True
            ).start()
        result: Future[T] = Future()
        self._jobs.put((function, result))
        try:
            return result.result(timeout_s)
        except TimeoutError:
            self.close()  # its thread ends when (if) the call returns
            raise CallTimedOut(f"no answer from the broker in {timeout_s:.0f} s") from None

    def close(self) -> None:
        if self._jobs is not None:
            self._jobs.put(None)
            self._jobs = None


def _run_jobs(jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None]) -> None:
    while (job := jobs.get()) is not None:
        function, result = job
        try:
            result.set_result(function())
        except BaseException as exc:  # handed to the caller, who decides
            result.set_exception(exc)
        del job, function, result  # an abandoned producer is freed once its call returns


class TransactionalProducer:
    """A transactional producer whose batches commit the consumer's offsets with them."""

    def __init__(
        self,
        config: Mapping[str, Any],
        consumer: Consumer,
        timeout_s: float = TRANSACTION_TIMEOUT_S,
    ) -> None:
        if "transactional.id" not in config:
            raise ValueError("a transactional producer needs a transactional.id")
        self._config = {"retry.backoff.ms": RETRY_BACKOFF_MS, **config}
        self._consumer = consumer
        self._timeout_s = timeout_s
        self._calls = BlockingCalls(f"txn-{config['transactional.id']}")
        self._producer = Producer(self._config)
        self._usable = True
        self._sent = 0
        self.replaced = 0

    def init(self) -> None:
        """Fences an earlier producer with the same id and aborts what it left open."""
        self._calls.call(lambda: self._producer.init_transactions(self._timeout_s), self._timeout_s)

    @contextmanager
    def batch(self, offsets: Iterable[TopicPartition]) -> Iterator[None]:
        """Everything sent inside commits with ``offsets`` (the next ones to read), or it is
        aborted: a Kafka error raises ``TransactionFailed``, any other error as it is."""
        self._sent = 0
        try:
            self._producer.begin_transaction()
            yield
            if self._sent:
                self._commit(list(offsets))
            else:
                # Nothing to publish (say, a batch of duplicates): the embedded broker does not
                # apply the offsets of a transaction without records, so they are committed
                # directly. Nothing else is in flight: every earlier batch has committed.
                self._producer.abort_transaction(self._timeout_s)
                self._consumer.commit(offsets=list(offsets), asynchronous=False)
        except (KafkaException, CallTimedOut) as exc:
            self._abort()
            # Replaced in recover(), even after a clean abort: an idempotent producer whose
            # record was refused keeps a gap in its sequence numbers, and its next transaction
            # fails too (OUT_OF_ORDER_SEQUENCE_NUMBER, seen on Kafka 4.4).
            self._usable = False
            error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
            if error is not None and error.fatal():
                # Fenced: another instance with this transactional id took over. This one must
                # not write anything more; stopping is the only right answer.
                raise
            raise TransactionFailed(f"the transaction did not commit: {exc}") from exc
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

    def recover(
        self, resubscribe: Callable[[], Consumer], keep_trying: Callable[[], bool]
    ) -> Consumer:
        """After ``TransactionFailed``: returns the consumer the service reads with from now on.

        The producer that failed is first replaced by a new one with the same transactional id,
        whose start fences the old one and aborts its transaction if it is still open (the old
        one may be stuck in a call that never returns): until then read_committed readers (a
        changelog restore) would wait on that transaction, and the group's offset fetch would
        wait on its offsets. This is tried again every ``RECOVERY_RETRY_S`` while
        ``keep_trying()`` (the cluster may still be electing leaders).

        Then the consumer is closed, leaving its group, and ``resubscribe()`` makes and
        subscribes a new one: the group assigns it the partitions again, each starting at its
        committed offset, and the service's ``on_assign`` rebuilds its state as of that commit.
        The consumer is not rewound by seeking: in a full test run under load (issue 17), a
        consumer seeked back over committed records, while a transaction just after them on the
        same partition was being aborted, never delivered them again (33 events lost). The log
        read correctly afterwards; a new consumer carries no fetch state from before.
        """
        while not self._usable:
            if not keep_trying():
                return self._consumer  # stopping: the service closes it
            try:
                self._replace()
            except (KafkaException, CallTimedOut) as exc:
                log.warning("recovery failed (%s); trying again in %.0f s", exc, RECOVERY_RETRY_S)
                time.sleep(RECOVERY_RETRY_S)
        started = time.perf_counter()
        self._consumer.close()
        self._consumer = resubscribe()
        log.warning(
            "consumer replaced (old one closed in %.2f s); its partitions start again at the "
            "group's committed offsets",
            time.perf_counter() - started,
        )
        return self._consumer

    def _replace(self) -> None:
        self._calls.close()
        self._calls = BlockingCalls(f"txn-{self._config['transactional.id']}")
        self._producer = Producer(self._config)
        self.replaced += 1
        log.warning("transactional producer replaced (%d so far)", self.replaced)
        self.init()
        self._usable = True

    def flush(self) -> None:
        if self._usable:
            self._producer.flush(self._timeout_s)
        self._calls.close()

    def _commit(self, offsets: list[TopicPartition]) -> None:
        producer = self._producer
        group = self._consumer.consumer_group_metadata()

        def commit() -> None:
            producer.send_offsets_to_transaction(offsets, group, self._timeout_s)
            retried: list[str] = []
            while True:
                try:
                    producer.commit_transaction(self._timeout_s)
                    break
                except KafkaException as exc:
                    if not exc.args[0].retriable():
                        raise
                    retried.append(str(exc.args[0]))
            if retried:
                # The evidence a loss would need: a commit that said yes after saying "try
                # again" covers these offsets, and nothing will consume them again.
                where = ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in offsets)
                log.warning(
                    "transaction committed after %d retried commits (%s); offsets %s",
                    len(retried),
                    "; ".join(retried),
                    where,
                )

        try:
            self._calls.call(commit, self._timeout_s)
        except CallTimedOut:
            self._usable = False  # its thread is still inside it
            raise

    def _abort(self) -> None:
        if not self._usable:
            return
        try:
            self._calls.call(
                lambda: self._producer.abort_transaction(self._timeout_s), self._timeout_s
            )
        except (KafkaException, CallTimedOut) as exc:
            log.error("aborting the transaction failed too: %s", exc)
            self._usable = False


# Each (topic, partition)'s committed offset; None where nothing is committed yet.
Committed = dict[tuple[str, int], int | None]


def next_offsets(positions: Iterable[tuple[str, int, int]]) -> list[TopicPartition]:
    """The offsets to commit after consuming records at (topic, partition, offset)."""
    latest: dict[tuple[str, int], int] = {}
    for topic, partition, offset in positions:
        key = (topic, partition)
        latest[key] = max(latest.get(key, -1), offset)
    return [TopicPartition(t, p, o + 1) for (t, p), o in latest.items()]
