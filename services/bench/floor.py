"""The latency floor of the pipeline's shape on this broker: relays in series, no work in them.

A publisher sends small records at a fixed rate to a source topic; relay 1 copies them to the
next topic, relay 2 (the pipeline has two hops: featurizer, scorer) to the one after, and so on;
a read_committed reader of the last topic stamps each on receipt. Each relay is
one process doing what a service does minus the service's work: consume a micro-batch, produce
it, and either commit it in a transaction with its offsets (``exactly_once``, the featurizer's
and the scorer's way) or just produce it with an idempotent producer (at-least-once). What the
floor costs is what no tuning of the services can take away.
"""

from __future__ import annotations

import multiprocessing
import shutil
import statistics
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, Message, Producer

from services.bench import loadgen
from services.bench.output import say
from services.core.kafka import (
    TopicSpec,
    consume_batch,
    consumer_config,
    create_topics,
    producer_config,
)
from services.core.settings import StackSettings
from services.core.transactions import TransactionalProducer, next_offsets
from services.stack import local

_STAMP = struct.Struct(">d")
PUBLISHER_LINGER_MS = loadgen.LINGER_MS
PIPELINE_HOPS = 2  # featurizer, scorer


@dataclass(frozen=True)
class FloorRun:
    delivery: str  # exactly-once (a transaction a micro-batch) or at-least-once
    rate: float
    seconds: float
    sent: int
    received: int
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class FloorResult:
    broker: str
    relays: int
    publisher_linger_ms: int
    runs: list[FloorRun]


def run(
    base: StackSettings,
    *,
    rate: float,
    seconds: float,
    warm_up_s: float,
    rounds: int,
    relays: int | None = None,
    publisher_linger_ms: int | None = None,
) -> FloorResult:
    """On a fresh local stack: a warm-up, then ``rounds`` pairs of runs, at-least-once then
    exactly-once, each ``seconds`` long at ``rate`` records/s through ``relays`` relays (the
    pipeline's hops when None), the publisher lingering ``publisher_linger_ms`` (the load
    generator's when None)."""
    relays = PIPELINE_HOPS if relays is None else relays
    publisher_linger_ms = (
        PUBLISHER_LINGER_MS if publisher_linger_ms is None else publisher_linger_ms
    )
    if relays < 1:
        raise ValueError(f"relays: {relays}; at least 1")
    shape = Shape(relays, publisher_linger_ms)
    home = base.home / "bench-floor"
    shutil.rmtree(home, ignore_errors=True)
    with local.running_servers(base.model_copy(update={"home": home})) as (settings, state):
        broker = state.broker
        say(f"floor: warming the broker up, {rate:,.0f} records/s for {warm_up_s:.0f} s")
        measure(settings, shape, exactly_once=True, rate=rate, seconds=1.0, warm_up_s=warm_up_s)
        runs = []
        for _ in range(rounds):
            for exactly_once in (False, True):
                result = measure(
                    settings,
                    shape,
                    exactly_once=exactly_once,
                    rate=rate,
                    seconds=seconds,
                    warm_up_s=5.0,
                )
                say(
                    f"floor: {result.delivery}: p50 {result.p50_ms:.1f} ms, p99 "
                    f"{result.p99_ms:.1f} ms ({result.received:,} of {result.sent:,} received)"
                )
                runs.append(result)
    return FloorResult(broker, relays, publisher_linger_ms, runs)


@dataclass(frozen=True)
class Shape:
    relays: int
    publisher_linger_ms: int


def measure(
    settings: StackSettings,
    shape: Shape,
    *,
    exactly_once: bool,
    rate: float,
    seconds: float,
    warm_up_s: float,
) -> FloorRun:
    run_id = uuid.uuid4().hex[:8]
    topics = [f"floor-{run_id}-{n}" for n in range(shape.relays + 1)]
    create_topics(settings, [TopicSpec(t, 1) for t in topics])
    relays = [
        multiprocessing.Process(
            target=_relay, args=(settings, topics[n], topics[n + 1], exactly_once, f"{run_id}-{n}")
        )
        for n in range(shape.relays)
    ]
    for relay in relays:
        relay.start()
    reader = Consumer(consumer_config(settings, f"floor-reader-{run_id}"))
    reader.subscribe([topics[-1]])
    linger = shape.publisher_linger_ms
    try:
        _publish(settings, topics[0], linger, rate, warm_up_s, reader)
        latencies: list[float] = []
        sent = _publish(settings, topics[0], linger, rate, seconds, reader, latencies)
        deadline = time.monotonic() + 10
        while len(latencies) < sent and time.monotonic() < deadline:
            _receive(reader, latencies, 0.1)
    finally:
        reader.close()
        for relay in relays:
            relay.terminate()
            relay.join(10)
    ordered = sorted(latencies)
    return FloorRun(
        "exactly-once" if exactly_once else "at-least-once",
        rate,
        seconds,
        sent,
        len(ordered),
        statistics.median(ordered) * 1000 if ordered else float("nan"),
        ordered[int(0.99 * (len(ordered) - 1))] * 1000 if ordered else float("nan"),
    )


def _publish(
    settings: StackSettings,
    topic: str,
    linger_ms: int,
    rate: float,
    seconds: float,
    reader: Consumer,
    latencies: list[float] | None = None,
) -> int:
    producer = Producer(
        {"bootstrap.servers": settings.bootstrap, "linger.ms": linger_ms, "acks": "all"}
    )
    marker = b"m" if latencies is not None else b"w"
    sink: list[float] = latencies if latencies is not None else []
    started = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(elapsed * rate) + 1
        while sent < due:
            producer.produce(topic, _STAMP.pack(time.time()), marker)
            sent += 1
        producer.poll(0)
        _receive(reader, sink, 0.0005, only=marker)
    producer.flush(30)
    return sent


def _receive(reader: Consumer, latencies: list[float], wait_s: float, only: bytes = b"m") -> None:
    for message in reader.consume(1000, wait_s):
        value = message.value()
        if message.error() is None and message.key() == only and value is not None:
            latencies.append(time.time() - _STAMP.unpack(value)[0])


def _relay(settings: StackSettings, source: str, sink: str, exactly_once: bool, name: str) -> None:
    """Copies ``source`` to ``sink`` a micro-batch at a time, until terminated."""
    consumer = Consumer(consumer_config(settings, f"floor-relay-{name}"))
    consumer.subscribe([source])
    publish = (
        _transactional(settings, consumer, sink, name) if exactly_once else _plain(settings, sink)
    )
    while True:
        messages = [m for m in consume_batch(consumer, 1000, 0.0) if m.error() is None]
        if messages:
            publish(messages)


def _transactional(
    settings: StackSettings, consumer: Consumer, sink: str, name: str
) -> Callable[[list[Message]], None]:
    """Each batch in a transaction with its offsets, as the featurizer and the scorer do."""
    producer = TransactionalProducer(
        producer_config(settings, **{"transactional.id": f"floor-{name}", "linger.ms": 0}),
        consumer,
    )
    producer.init()

    def publish(messages: list[Message]) -> None:
        positions = (
            (str(m.topic()), int(m.partition() or 0), int(m.offset() or 0)) for m in messages
        )
        with producer.batch(next_offsets(positions)):
            for m in messages:
                producer.send(sink, m.key(), m.value())

    return publish


def _plain(settings: StackSettings, sink: str) -> Callable[[list[Message]], None]:
    """Each batch handed to an idempotent producer, offsets never committed (at-least-once)."""
    producer = Producer(producer_config(settings, **{"linger.ms": 0}))

    def publish(messages: list[Message]) -> None:
        for m in messages:
            producer.produce(sink, m.value(), m.key())
        producer.poll(0)

    return publish
