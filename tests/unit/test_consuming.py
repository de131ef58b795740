"""How the services consume: micro-batches whose window begins with the call and never holds a
record that ended an idle wait, consumers off the hot path that fetch seldom, and history
readers that fetch long enough to get through a long log."""

from __future__ import annotations

from typing import Any, cast

from confluent_kafka import Consumer

from services.core.kafka import (
    IDLE_POLL_S,
    background_consumer_config,
    consume_batch,
    consumer_config,
    history_consumer_config,
    quiet_poll_s,
)
from services.core.settings import (
    BACKGROUND_FETCH_WAIT_MS,
    EMBEDDED_FETCH_WAIT_MS,
    HISTORY_FETCH_WAIT_MS,
    StackSettings,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class QueuedConsumer:
    """An in-memory double of ``Consumer.consume`` on a fake clock: what has been fetched is
    ``queued``. A call that can be filled from it returns at once; one that cannot waits out
    its timeout on the clock, during which the records that ``arrive_while_waiting`` come in.
    The first record of an idle loop can be made to come ``first_after_s`` into the first
    call."""

    def __init__(
        self,
        queued: list[str],
        arrive_while_waiting: list[str] | None = None,
        first_after_s: float = 0.0,
    ) -> None:
        self.queued = list(queued)
        self.arriving = list(arrive_while_waiting or [])
        self.first_after_s = first_after_s
        self.clock = Clock()
        self.calls: list[tuple[int, float]] = []

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        self.calls.append((num_messages, round(timeout, 6)))
        if len(self.calls) == 1:
            self.clock.now += self.first_after_s
        if len(self.queued) < num_messages and timeout > 0:
            self.clock.now += timeout
            self.queued += self.arriving
            self.arriving = []
        taken, self.queued = self.queued[:num_messages], self.queued[num_messages:]
        return taken


def batch_of(consumer: QueuedConsumer, size: int, wait_s: float) -> list[Any]:
    return list(consume_batch(cast(Consumer, consumer), size, wait_s, clock=consumer.clock))


def test_a_wait_of_zero_takes_what_was_fetched_and_nothing_that_arrives_later() -> None:
    consumer = QueuedConsumer(["a", "b", "c"], arrive_while_waiting=["d"])
    batch = batch_of(consumer, size=10, wait_s=0.0)
    assert batch == ["a", "b", "c"]
    assert consumer.calls == [(1, IDLE_POLL_S), (9, 0.0)]


def test_records_that_come_within_the_window_join_the_batch() -> None:
    consumer = QueuedConsumer(["a"], arrive_while_waiting=["b", "c"], first_after_s=0.002)
    batch = batch_of(consumer, size=10, wait_s=0.005)
    assert batch == ["a", "b", "c"]
    assert consumer.calls == [(1, IDLE_POLL_S), (9, 0.003)]  # the window began with the call


def test_a_record_that_ends_an_idle_wait_is_taken_at_once_not_held_for_a_window() -> None:
    consumer = QueuedConsumer(["a"], arrive_while_waiting=["b"], first_after_s=0.050)
    batch = batch_of(consumer, size=10, wait_s=0.005)
    assert batch == ["a"]
    assert consumer.calls == [(1, IDLE_POLL_S), (9, 0.0)]


def test_an_idle_loop_waits_only_for_a_first_record() -> None:
    consumer = QueuedConsumer([])
    assert batch_of(consumer, size=10, wait_s=0.005) == []
    assert consumer.calls == [(1, IDLE_POLL_S)]


def test_a_batch_never_exceeds_its_size() -> None:
    consumer = QueuedConsumer([str(i) for i in range(7)])
    assert batch_of(consumer, size=3, wait_s=0.0) == ["0", "1", "2"]
    assert batch_of(consumer, size=1, wait_s=0.0) == ["3"]
    assert consumer.calls[-1] == (1, IDLE_POLL_S)  # size 1: no second call


def test_background_consumers_fetch_seldom_but_keep_a_longer_configured_wait() -> None:
    embedded = StackSettings(kafka_bootstrap="127.0.0.1:1", embedded=True)
    assert consumer_config(embedded, "g")["fetch.wait.max.ms"] == EMBEDDED_FETCH_WAIT_MS
    assert background_consumer_config(embedded, "g")["fetch.wait.max.ms"] == (
        BACKGROUND_FETCH_WAIT_MS
    )
    patient = StackSettings(kafka_bootstrap="127.0.0.1:1", fetch_wait_ms=500)
    assert background_consumer_config(patient, "g")["fetch.wait.max.ms"] == 500


def test_history_readers_fetch_long_enough_and_wait_out_two_fetches_before_calling_it_quiet() -> (
    None
):
    embedded = StackSettings(kafka_bootstrap="127.0.0.1:1", embedded=True)
    config = history_consumer_config(embedded)
    assert config["fetch.wait.max.ms"] == HISTORY_FETCH_WAIT_MS
    assert config["enable.partition.eof"] is True
    assert quiet_poll_s(config) > 2 * HISTORY_FETCH_WAIT_MS / 1000
    patient = StackSettings(kafka_bootstrap="127.0.0.1:1", fetch_wait_ms=500)
    assert history_consumer_config(patient)["fetch.wait.max.ms"] == 500
