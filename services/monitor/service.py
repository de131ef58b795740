"""The monitor's loop: parts re-keyed by event id, joined, each joined event published once.

One consumer reads the domain's predictions, outcomes and feature vectors and the monitor's
own by-event topic. A batch, in one Kafka transaction with its consumed offsets:

1. each source record becomes a part, forwarded to ``<app>.<domain>.by-event`` keyed by its
   event id (so the three parts of an event meet in one partition whatever the source topics
   were keyed by); an outcome that cannot be used goes to ``<domain>.outcomes.dlq`` instead;
2. each forwarded part read back goes into its partition's ``JoinTable``; a completed join and
   a prediction and outcome whose vector never came within the TTL go out on
   ``<domain>.labelled``;
3. the tables' changes go to ``<app>.<domain>.join-state`` (compacted), so a restart restores
   each partition's table as of the last commit: no pair lost, none published twice.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition
from prometheus_client import CollectorRegistry

from services.core.changelog import read_changelogs
from services.core.deadletter import SourcePosition, dead_letter
from services.core.declarations import Domain
from services.core.kafka import (
    TopicSpec,
    consume_batch,
    consumer_config,
    create_topics,
    partition_count,
    producer_config,
)
from services.core.lifecycle import StoppableLoop
from services.core.serde import CodecFactory, Record
from services.core.transactions import Committed, TransactionalProducer, TransactionFailed
from services.monitor.join import Change, Expired, Joined, JoinTable, Kind, Part
from services.monitor.labelled import labelled_record
from services.monitor.metrics import MonitorMetrics
from services.monitor.parts import PartReader, Refused
from services.monitor.settings import MonitorSettings
from services.monitor.watch import QualityWatch

log = logging.getLogger(__name__)

SERVICE = "monitor"


def group_id(settings: MonitorSettings, domain: Domain) -> str:
    return f"{settings.monitor_app_id}.{domain.name}"


class Monitor(StoppableLoop):
    def __init__(
        self,
        settings: MonitorSettings,
        domain: Domain,
        codecs: CodecFactory,
        registry: CollectorRegistry,
    ) -> None:
        self._settings = settings
        self._domain = domain
        self._metrics = MonitorMetrics.create(registry)
        topics = domain.topics
        app = settings.monitor_app_id
        self._by_event = topics.by_event(app)
        self._join_state = topics.join_state(app)
        self._reader = PartReader(domain, codecs)
        self._part_codec = codecs.for_topic(self._by_event)
        self._labelled_codec = codecs.for_topic(topics.labelled)
        self._dlq_codec = codecs.for_topic(topics.outcomes_dlq)
        self._ttl_ms = int(domain.monitoring.join_ttl.total_seconds() * 1000)
        self._done_ttl_ms = int(domain.monitoring.done_ttl.total_seconds() * 1000)
        self._tables: dict[int, JoinTable] = {}
        group = group_id(settings, domain)
        self._consumer = self._new_consumer()
        self._producer = TransactionalProducer(
            producer_config(
                settings, **{"transactional.id": f"{group}-{settings.monitor_instance}"}
            ),
            self._consumer,
        )
        partitions = partition_count(settings, topics.predictions)
        created = create_topics(
            settings,
            [
                TopicSpec(self._by_event, partitions),
                TopicSpec(self._join_state, partitions, {"cleanup.policy": "compact"}),
            ],
        )
        if created:
            log.info("created %s", ", ".join(created))
        self._watch = QualityWatch(
            settings, domain, codecs, settings.monitor_snapshot_every_s, self._metrics
        )

    def run(self) -> None:
        settings = self._settings
        self._producer.init()
        self._subscribe(self._consumer)
        topics = ", ".join(self._topics())
        log.info("monitor %s: consuming %s", self._domain.name, topics)
        wait_s = settings.monitor_batch_wait_ms / 1000
        try:
            while self._running:
                messages = consume_batch(self._consumer, settings.monitor_batch_size, wait_s)
                if messages:
                    try:
                        self._process(messages)
                    except TransactionFailed as failure:
                        self._recover(failure)
                self._watch.poll(time.monotonic())
        finally:
            self._consumer.close()
            self._producer.flush()
            self._watch.close()

    def _process(self, messages: list[Message]) -> None:
        offsets: dict[tuple[str, int], int] = {}
        forwarded: list[Message] = []
        for message in messages:
            if message.error() is not None:
                log.warning("consumer: %s", message.error())
                continue
            where = (str(message.topic()), int(message.partition() or 0))
            offsets[where] = int(message.offset() or 0) + 1
            if where[0] == self._by_event:
                forwarded.append(message)
        if not offsets:
            return
        positions = (TopicPartition(t, p, o) for (t, p), o in offsets.items())
        with self._producer.batch(positions):
            for message in messages:
                topic = message.topic()
                if message.error() is None and topic != self._by_event:
                    self._forward(message, str(topic))
            self._join(forwarded)

    def _join(self, forwarded: list[Message]) -> None:
        """The forwarded parts into their partitions' tables; what completes or expires out."""
        touched: set[int] = set()
        for message in forwarded:
            number = int(message.partition() or 0)
            part = self._part_of(self._part_codec.decode(message.value() or b""))
            joined = self._tables[number].add(part)
            if joined is not None:
                self._publish(joined)
            touched.add(number)
        name = self._domain.name
        for number in touched:
            table = self._tables[number]
            self._count_expired(table.expire())
            for change in table.drain_changes():
                self._log_change(number, change)
            self._metrics.pending.labels(name, str(number)).set(len(table))
            self._metrics.duplicates.labels(name).inc(table.take_duplicates())

    def _forward(self, message: Message, topic: str) -> None:
        key, value = message.key(), message.value()
        got = self._reader.read(topic, key, value, message.timestamp()[1])
        name = self._domain.name
        if isinstance(got, Refused):
            self._metrics.refused.labels(name, topic, got.reason).inc()
            if topic == self._domain.topics.outcomes:
                self._dead_letter(message, got)
            else:  # written by streamml's own services: their DLQs hold what they refused
                log.warning("%s [%s] @%s: %s", topic, message.partition(), message.offset(), got)
            return
        self._metrics.parts.labels(name, got.kind.value).inc()
        self._producer.send(self._by_event, got.event_id.encode(), self._encode_part(got))

    def _dead_letter(self, message: Message, refused: Refused) -> None:
        source = SourcePosition(
            str(message.topic()), int(message.partition() or 0), int(message.offset() or 0)
        )
        letter = dead_letter(
            reason=refused.reason,
            detail=refused.detail,
            key=message.key(),
            value=message.value(),
            source=source,
            service=SERVICE,
            failed_at_ms=int(time.time() * 1000),
        )
        self._producer.send(
            self._domain.topics.outcomes_dlq, message.key(), self._dlq_codec.encode(letter)
        )

    def _publish(self, joined: Joined) -> None:
        key, record = labelled_record(self._domain, joined, self._reader, int(time.time() * 1000))
        self._producer.send(self._domain.topics.labelled, key, self._labelled_codec.encode(record))
        self._metrics.joined.labels(
            self._domain.name, str(joined.features is not None).lower()
        ).inc()

    def _count_expired(self, expired: Expired) -> None:
        name = self._domain.name
        self._metrics.unlabelled.labels(name).inc(expired.unlabelled)
        self._metrics.unmatched.labels(name).inc(expired.unmatched)
        self._metrics.evicted.labels(name).inc(expired.evicted)
        for joined in expired.joined:
            self._publish(joined)

    def _log_change(self, number: int, change: Change) -> None:
        key = f"{change.kind.value}:{change.event_id}".encode()
        value = None if change.part is None else self._encode_part(change.part)
        self._producer.send(self._join_state, key, value, number)

    def _encode_part(self, part: Part) -> bytes:
        record: Record = {
            "event_id": part.event_id,
            "kind": part.kind.value,
            "source_key": part.key,
            "source_value": part.value,
            "time": part.time_ms,
        }
        return self._part_codec.encode(record)

    @staticmethod
    def _part_of(record: Record) -> Part:
        return Part(
            record["event_id"],
            Kind(record["kind"]),
            record["source_key"],
            record["source_value"],
            record["time"],
        )

    def _change_of(self, key: bytes, value: bytes | None) -> Change:
        kind, _, event_id = key.decode().partition(":")
        if value is None:
            return Change(event_id, Kind(kind), None)
        return Change(event_id, Kind(kind), self._part_of(self._part_codec.decode(value)))

    def _recover(self, failure: TransactionFailed) -> None:
        """The new consumer's assignment restores the join state as of the last commit."""
        log.warning("%s; restoring the join state of the last commit", failure)
        self._metrics.recoveries.labels(self._domain.name).inc()
        self._consumer = self._producer.recover(
            lambda: self._subscribe(self._new_consumer()), lambda: self._running
        )

    def _new_consumer(self) -> Consumer:
        return Consumer(consumer_config(self._settings, group_id(self._settings, self._domain)))

    def _topics(self) -> list[str]:
        return [*self._reader.topics, self._by_event]

    def _subscribe(self, consumer: Consumer) -> Consumer:
        consumer.subscribe(
            self._topics(),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        return consumer

    def _restore(self, committed: Committed) -> None:
        """Rebuilds the join tables of the by-event partitions among ``committed``."""
        numbers = sorted(p for t, p in committed if t == self._by_event)
        started = time.perf_counter()
        logs = read_changelogs(
            self._settings,
            [(self._join_state, n) for n in numbers],
            self._settings.monitor_restore_timeout_s,
        )
        for (_, number), records in logs.items():
            table = self._tables[number] = self._new_table()
            table.restore(self._change_of(k, v) for k, v in records)
            log.info("join state [%d]: %d entries restored", number, len(table))
        if numbers:
            log.info(
                "restored %d partitions in %.2f s", len(numbers), time.perf_counter() - started
            )

    def _new_table(self) -> JoinTable:
        monitoring = self._domain.monitoring
        return JoinTable(self._ttl_ms, monitoring.join_max_entries, self._done_ttl_ms)

    def _on_assign(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        wanted = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        found = self._consumer.committed(wanted, self._settings.monitor_restore_timeout_s)
        self._restore({(tp.topic, tp.partition): tp.offset for tp in found})

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        for tp in partitions:  # every batch is committed before the next poll
            if tp.topic == self._by_event:
                self._tables.pop(tp.partition, None)

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._on_revoke(consumer, partitions)
