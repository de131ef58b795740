"""The embedded broker's own costs, measured from outside: what each kind of request costs it.

The embedded broker (Tansu 0.6.0, memory storage) is a stripped Rust binary: no symbols, so no
profiler can say where its time goes. This measures it the way its clients meet it instead: a
fresh broker, one kind of request at a time, its CPU seconds read from /proc over the workload,
and the number of requests counted by librdkafka's own statistics. Dividing one by the other
gives the broker's CPU per request of that kind, the cost model behind the pipeline figures:

- an idle consumer: fetches that find nothing, at each fetch wait;
- produce requests of one record and of many;
- transactions of a consume-transform-produce loop (records, offsets, commit), by size;
- a consumer at the head of a partition that already holds many stored batches, fed one new
  record at a time: whether the new records reach it, at each fetch wait;
- a consumer catching up on a partition written as many small batches (one per request),
  from the start: whether it gets through, and what the broker spends meanwhile.

The last two show the limit that ends any steady load on this broker: it keeps every batch
for good, and a fetch that finds new data lists every batch of the partition first; once that
pass takes longer than the consumer's fetch wait, the fetch comes back empty, again and again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from services.bench.output import say
from services.bench.procstat import usage
from services.core.errors import StackError
from services.core.kafka import TopicSpec, consumer_config, create_topics, producer_config
from services.core.settings import StackSettings
from services.stack import local
from services.stack.tansu import broker_binary

PAYLOAD = b"x" * 100  # about the size of one of our Avro events
STATS_INTERVAL_MS = 100
FETCH_WAITS_MS = (1, 2, 5, 20, 100)
RECORDS_PER_PRODUCE = (1, 100)
RECORDS_PER_TRANSACTION = (1, 10, 100)
TRANSACTION_PARTITIONS = 16
HEAD_FETCH_WAITS_MS = (2, 20, 100)
HEAD_STORED_BATCHES = (2_000, 5_000, 10_000, 20_000)
# (fetch wait ms, one-record batches): the hot path's wait, then the history readers' wait
CATCH_UPS = (
    (2, 1_000),
    (2, 2_000),
    (2, 3_000),
    (2, 4_000),
    (2, 6_000),
    (100, 6_000),
    (100, 20_000),
)


@dataclass(frozen=True)
class RequestCost:
    """The broker's CPU over a workload of one kind of request."""

    workload: str
    requests: int  # counted by librdkafka (fetches, produce requests) or by us (transactions)
    seconds: float
    broker_cpu_seconds: float

    @property
    def broker_cores(self) -> float:
        return self.broker_cpu_seconds / self.seconds if self.seconds else 0.0

    @property
    def broker_ms_per_request(self) -> float:
        return 1000 * self.broker_cpu_seconds / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class AtHead:
    """A consumer at the end of a partition of ``stored`` batches, fed one record at a time."""

    fetch_wait_ms: int
    stored: int
    sent: int
    received: int
    broker_cores: float


@dataclass(frozen=True)
class CatchUp:
    """A consumer reading ``batches`` one-record batches of one partition from its start."""

    fetch_wait_ms: int
    batches: int
    read: int
    seconds: float
    broker_cpu_seconds: float


@dataclass
class BrokerResult:
    broker: str
    seconds_per_workload: float
    costs: list[RequestCost] = field(default_factory=list)
    at_head: list[AtHead] = field(default_factory=list)
    catch_up: list[CatchUp] = field(default_factory=list)


def run(
    base: StackSettings,
    *,
    seconds: float = 5.0,
    fetch_waits_ms: tuple[int, ...] = FETCH_WAITS_MS,
    head_stored_batches: tuple[int, ...] = HEAD_STORED_BATCHES,
    catch_ups: tuple[tuple[int, int], ...] = CATCH_UPS,
    catch_up_limit_s: float = 20.0,
) -> BrokerResult:
    home = base.home / "bench-broker"
    embedded = base.model_copy(update={"home": home, "broker": "embedded"})
    with local.running_servers(embedded) as (settings, state):
        if not state.embedded or not state.broker_pids:
            raise StackError("bench broker measures the embedded broker; none was started")
        broker = _Broker(settings, state.broker_pids[0])
        result = BrokerResult(f"{Path(broker_binary()).name}, memory storage", seconds)
        for wait_ms in fetch_waits_ms:
            say(f"an idle consumer, fetch wait {wait_ms} ms")
            result.costs.append(broker.idle_fetch(wait_ms, seconds))
        for records in RECORDS_PER_PRODUCE:
            for idempotent in (False, True):
                say(f"produce requests of {records} record(s), idempotent: {idempotent}")
                result.costs.append(broker.produce(records, seconds, idempotent=idempotent))
        for records in RECORDS_PER_TRANSACTION:
            say(f"transactions of {records} record(s) with their offsets")
            result.costs.append(broker.transactions(records, 1, seconds))
        say(f"transactions of one record in each of {TRANSACTION_PARTITIONS} partitions")
        result.costs.append(
            broker.transactions(TRANSACTION_PARTITIONS, TRANSACTION_PARTITIONS, seconds)
        )
        for wait_ms in HEAD_FETCH_WAITS_MS:
            say(f"a consumer at the head of a growing partition, fetch wait {wait_ms} ms")
            result.at_head += broker.at_head(wait_ms, head_stored_batches, seconds)
        for wait_ms, batches in catch_ups:
            say(
                f"a consumer catching up on {batches:,} one-record batches, fetch wait {wait_ms} ms"
            )
            result.catch_up.append(broker.catch_up(wait_ms, batches, catch_up_limit_s))
        return result


class _Broker:
    def __init__(self, settings: StackSettings, pid: int) -> None:
        self._settings = settings
        self._pid = pid
        self._topics = 0

    def _topic(self, partitions: int = 1) -> str:
        self._topics += 1
        name = f"bench.broker.{self._topics}"
        create_topics(self._settings, [TopicSpec(name, partitions)])
        return name

    def idle_fetch(self, wait_ms: int, seconds: float) -> RequestCost:
        topic = self._topic()
        stats = RequestCounts()
        consumer = Consumer(
            consumer_config(
                self._settings,
                None,
                **{"fetch.wait.max.ms": wait_ms, **stats.config()},
            )
        )
        consumer.assign([TopicPartition(topic, 0, 0)])
        consumer.poll(1.0)  # connected and fetching before the clock starts
        before = stats.count("Fetch")
        span = _Span(self._pid)
        while span.seconds() < seconds:
            consumer.poll(0.05)
        took, cpu = span.seconds(), span.broker_cpu_seconds()
        fetches = stats.count("Fetch") - before
        consumer.close()
        return RequestCost(f"idle fetch, wait {wait_ms} ms", fetches, took, cpu)

    def produce(self, records: int, seconds: float, *, idempotent: bool) -> RequestCost:
        topic = self._topic()
        stats = RequestCounts()
        producer = Producer(
            producer_config(
                self._settings,
                # flush() sends at once; the long linger keeps the records of one flush in
                # one request instead of a request as each is queued
                **{"linger.ms": 1000, "enable.idempotence": idempotent, **stats.config()},
            )
        )
        producer.produce(topic, PAYLOAD)
        producer.flush()
        before = stats.count("Produce")
        span = _Span(self._pid)
        while span.seconds() < seconds:
            for _ in range(records):
                producer.produce(topic, PAYLOAD)
            producer.flush()  # one request of ``records`` records
        took, cpu = span.seconds(), span.broker_cpu_seconds()
        producer.poll(STATS_INTERVAL_MS * 2 / 1000)
        requests = stats.count("Produce") - before
        kind = "idempotent" if idempotent else "plain"
        return RequestCost(
            f"produce ({kind}), {records} record(s) per request", requests, took, cpu
        )

    def transactions(self, records: int, partitions: int, seconds: float) -> RequestCost:
        topic, source = self._topic(partitions), self._topic()
        group = Consumer(consumer_config(self._settings, f"bench-broker-{time.time_ns()}"))
        producer = Producer(
            producer_config(
                self._settings,
                **{"linger.ms": 0, "transactional.id": f"bench-broker-{time.time_ns()}"},
            )
        )
        producer.init_transactions()
        committed = 0
        span = _Span(self._pid)
        while span.seconds() < seconds:
            producer.begin_transaction()
            for i in range(records):
                producer.produce(topic, PAYLOAD, partition=i % partitions)
            producer.send_offsets_to_transaction(
                [TopicPartition(source, 0, committed + 1)], group.consumer_group_metadata()
            )
            producer.commit_transaction()
            committed += 1
        took, cpu = span.seconds(), span.broker_cpu_seconds()
        group.close()
        spread = f" over {partitions} partitions" if partitions > 1 else ""
        return RequestCost(
            f"transaction of {records} record(s){spread} and its offsets", committed, took, cpu
        )

    def at_head(self, wait_ms: int, levels: tuple[int, ...], seconds: float) -> list[AtHead]:
        topic = self._topic()
        producer = Producer(producer_config(self._settings, **{"linger.ms": 0}))
        stored, results = 0, []
        for level in levels:
            while stored < level:
                producer.produce(topic, PAYLOAD)
                producer.flush()  # one stored batch each
                stored += 1
            consumer = Consumer(
                consumer_config(self._settings, None, **{"fetch.wait.max.ms": wait_ms})
            )
            consumer.assign([TopicPartition(topic, 0, stored)])
            consumer.poll(0.5)
            sent = received = 0
            before = stored
            span = _Span(self._pid)
            while span.seconds() < seconds:
                producer.produce(topic, PAYLOAD)
                producer.flush()
                sent += 1
                received += len(consumer.consume(100, 0.01))
            took, cpu = span.seconds(), span.broker_cpu_seconds()
            received += len(consumer.consume(sent, 1.0))  # what was still on its way
            consumer.close()
            stored += sent
            results.append(AtHead(wait_ms, before, sent, received, round(cpu / took, 3)))
        return results

    def catch_up(self, wait_ms: int, batches: int, limit_s: float) -> CatchUp:
        topic = self._topic()
        producer = Producer(producer_config(self._settings, **{"linger.ms": 0}))
        for _ in range(batches):
            producer.produce(topic, PAYLOAD)
            producer.flush()  # one stored batch each
        consumer = Consumer(consumer_config(self._settings, None, **{"fetch.wait.max.ms": wait_ms}))
        consumer.assign([TopicPartition(topic, 0, 0)])
        read = 0
        span = _Span(self._pid)
        while read < batches and span.seconds() < limit_s:
            read += sum(1 for m in consumer.consume(10_000, 0.1) if m.error() is None)
        took, cpu = span.seconds(), span.broker_cpu_seconds()
        consumer.close()
        return CatchUp(wait_ms, batches, read, took, cpu)


class _Span:
    """Wall-clock seconds since it began, and the broker's CPU seconds, read from /proc only
    when asked (not on every loop check: the broker shares the machine's two cores)."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._started = time.monotonic()
        self._cpu = usage(pid).cpu_seconds

    def seconds(self) -> float:
        return time.monotonic() - self._started

    def broker_cpu_seconds(self) -> float:
        return usage(self._pid).cpu_seconds - self._cpu


class RequestCounts:
    """Requests sent, by kind, summed over brokers, from librdkafka's statistics callback."""

    def __init__(self) -> None:
        self._latest: dict[str, int] = {}

    def config(self) -> dict[str, Any]:
        return {"statistics.interval.ms": STATS_INTERVAL_MS, "stats_cb": self.update}

    def update(self, stats_json: str) -> None:
        self._latest = requests_by_kind(json.loads(stats_json))

    def count(self, kind: str) -> int:
        return self._latest.get(kind, 0)


def requests_by_kind(stats: dict[str, Any]) -> dict[str, int]:
    """Sums each request kind's count over every broker connection in a statistics document."""
    totals: dict[str, int] = {}
    for broker in stats.get("brokers", {}).values():
        for kind, count in broker.get("req", {}).items():
            totals[kind] = totals.get(kind, 0) + int(count)
    return totals


def table(result: BrokerResult) -> str:
    """The figures as markdown, for docs/benchmarks.md."""
    lines = [
        f"Broker: {result.broker}; {result.seconds_per_workload:g} s per workload.",
        "",
        "| workload | requests (transactions) | broker cores | broker CPU per request |",
        "|---|---:|---:|---:|",
    ]
    for cost in result.costs:
        lines.append(
            f"| {cost.workload} | {cost.requests:,} | {cost.broker_cores:.3f} | "
            f"{cost.broker_ms_per_request:.3f} ms |"
        )
    lines += [
        "",
        "| fetch wait | batches stored | new records sent | received | broker cores |",
        "|---:|---:|---:|---:|---:|",
    ]
    for h in result.at_head:
        lines.append(
            f"| {h.fetch_wait_ms} ms | {h.stored:,} | {h.sent:,} | {h.received:,} | "
            f"{h.broker_cores:.2f} |"
        )
    lines += [
        "",
        "| fetch wait | one-record batches in the partition | read from the start | seconds | "
        "broker CPU s |",
        "|---:|---:|---:|---:|---:|",
    ]
    for c in result.catch_up:
        lines.append(
            f"| {c.fetch_wait_ms} ms | {c.batches:,} | {c.read:,} | {c.seconds:.1f} | "
            f"{c.broker_cpu_seconds:.1f} |"
        )
    return "\n".join(lines)
