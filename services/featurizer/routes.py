"""What the featurizer does with a record of each topic it reads.

A route turns one consumed record into outputs (records to produce, online rows) using the
windows of the record's partition. The key entity's route reads the domain's events; a
secondary route reads the events forwarded by another entity (payments: by merchant).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Histogram

from services.core.deadletter import SourcePosition
from services.core.declarations import Domain, Entity
from services.core.kafka import TopicSpec
from services.core.serde import CodecFactory
from services.featurestore.feast_objects import feature_view_name
from services.featurizer.metrics import FeaturizerMetrics
from services.featurizer.online import OnlineBuffer, OnlineRow
from services.featurizer.processor import Accepted, EventProcessor, Rejected
from services.featurizer.secondary import (
    SecondaryUpdater,
    forward_key,
    forward_partition,
    forward_source,
)
from services.featurizer.state import WindowTable

log = logging.getLogger(__name__)

Send = Callable[[str, bytes | None, bytes, int], None]


class KeyEntityRoute:
    """The domain's events: checks, windows of the key entity, vector, forwards, online row."""

    def __init__(
        self,
        domain: Domain,
        app_id: str,
        codecs: CodecFactory,
        metrics: FeaturizerMetrics,
        send: Send,
        partitions: int,
    ) -> None:
        topics = domain.topics
        self.topic = topics.events
        self.table = WindowTable(domain, domain.key_entity, codecs.store, app_id)
        self._domain = domain.name
        self._processor = EventProcessor(domain, codecs.for_topic(topics.events))
        self._encode_vector = codecs.for_topic(topics.features).encode
        self._encode_letter = codecs.for_topic(topics.events_dlq).encode
        self._features_topic = topics.features
        self._dlq_topic = topics.events_dlq
        self._forwards = [
            (e.key_field, topics.by_entity(app_id, e.name)) for e in domain.secondary_entities
        ]
        self._partitions = partitions  # of the events topic and every topic co-partitioned with it
        self._view = feature_view_name(domain, domain.key_entity)
        self._send = send
        self._events: Counter = metrics.events.labels(domain.name)
        self._process_seconds: Histogram = metrics.process_seconds.labels(domain.name)
        self._vectors: Counter = metrics.vectors.labels(domain.name)
        self._duplicates: Counter = metrics.duplicates.labels(domain.name)
        self._dead_letters = metrics.dead_letters
        self._lag: Histogram = metrics.lag_seconds.labels(domain.name)

    def handle(self, messages: list[Any], online: OnlineBuffer) -> None:
        send, table, process = self._send, self.table, self._processor.process
        vectors = duplicates = 0
        newest_ms = 0
        rows: dict[tuple[int, str], OnlineRow | None] = {}  # None: recompute after the batch
        for message in messages:
            partition = message.partition()
            position = SourcePosition(self.topic, partition, message.offset())
            verdict = process(message.key(), message.value(), position, table.partition(partition))
            if isinstance(verdict, Accepted):
                key = verdict.key.encode()
                send(self._features_topic, key, self._encode_vector(verdict.vector), -1)
                for key_field, topic in self._forwards:
                    other = str(verdict.vector[key_field]).encode()
                    send(
                        topic,
                        forward_key(other, partition, message.offset()),
                        message.value(),
                        forward_partition(other, self._partitions),
                    )
                rows[(partition, verdict.key)] = (
                    OnlineRow(verdict.key, verdict.event_time_ms, verdict.features)
                    if verdict.newest
                    else None
                )
                vectors += 1
                newest_ms = max(newest_ms, verdict.event_time_ms)
            elif isinstance(verdict, Rejected):
                send(self._dlq_topic, message.key(), self._encode_letter(verdict.dead_letter), -1)
                self._dead_letters.labels(self._domain, verdict.reason).inc()
                log.info("dead letter: %s", verdict.dead_letter["detail"])
            else:
                duplicates += 1
        for (partition, entity_key), row in rows.items():
            if row is not None:
                online.add(self._view, row)
            else:  # a late event changed the entity's latest features too
                window = table.partition(partition).windows[entity_key]
                latest = self._processor.latest(window)
                assert window.max_time is not None, "a window that counted an event"
                online.add(self._view, OnlineRow(entity_key, window.max_time, latest))
        self._events.inc(len(messages))
        self._vectors.inc(vectors)
        self._duplicates.inc(duplicates)
        if newest_ms:
            self._lag.observe(max(time.time() - newest_ms / 1000, 0.0))

    def observe_time(self, per_event_s: float) -> None:
        self._process_seconds.observe(per_event_s)


class SecondaryRoute:
    """Forwarded events of one other entity: its windows and online row."""

    def __init__(
        self,
        domain: Domain,
        entity: Entity,
        app_id: str,
        codecs: CodecFactory,
        metrics: FeaturizerMetrics,
    ) -> None:
        self.topic = domain.topics.by_entity(app_id, entity.name)
        self.table = WindowTable(domain, entity.name, codecs.store, app_id)
        self._updater = SecondaryUpdater(domain, entity, codecs.for_topic(domain.topics.events))
        self._view = feature_view_name(domain, entity.name)
        self._forwarded_again: Counter = metrics.forwarded_again.labels(domain.name, entity.name)

    def handle(self, messages: list[Any], online: OnlineBuffer) -> None:
        table, apply = self.table, self._updater.apply
        touched: set[tuple[int, str]] = set()
        again = 0
        for message in messages:
            partition = message.partition()
            windows = table.partition(partition)
            source, offset = forward_source(message.key())
            if offset <= windows.forwarded.get(source, -1):
                again += 1  # sent again after a crash: counted already
                continue
            windows.forwarded[source] = offset
            touched.add((partition, apply(message.value(), windows)))
        if again:
            self._forwarded_again.inc(again)
        for partition, key in touched:
            window = table.partition(partition).windows[key]
            online.add(self._view, self._updater.online_row(key, window))

    def observe_time(self, per_event_s: float) -> None:
        """Counted with the domain's events: a forwarded event is part of their work."""


Route = KeyEntityRoute | SecondaryRoute


def build_routes(
    domain: Domain,
    app_id: str,
    codecs: CodecFactory,
    metrics: FeaturizerMetrics,
    send: Send,
    partitions: int,
) -> list[Route]:
    """The routes of one domain: its events, then each secondary entity's forwards.
    ``partitions``: the events topic's count, which its internal topics share."""
    routes: list[Route] = [KeyEntityRoute(domain, app_id, codecs, metrics, send, partitions)]
    routes += [
        SecondaryRoute(domain, e, app_id, codecs, metrics) for e in domain.secondary_entities
    ]
    return routes


def internal_topics(domain: Domain, app_id: str, partitions: int) -> list[TopicSpec]:
    """The topics a featurizer app keeps for itself, named after it (as faust and Kafka
    Streams do), co-partitioned with the domain's events topic (``partitions``)."""
    changelog = {"cleanup.policy": "compact"}
    specs = [
        TopicSpec(domain.topics.windows_changelog(app_id, domain.key_entity), partitions, changelog)
    ]
    for entity in domain.secondary_entities:
        specs += [
            TopicSpec(domain.topics.by_entity(app_id, entity.name), partitions),
            TopicSpec(domain.topics.windows_changelog(app_id, entity.name), partitions, changelog),
        ]
    return specs
