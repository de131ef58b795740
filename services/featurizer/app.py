"""The featurizer as a faust app: one agent per declared domain and entity, micro-batched.

Processing is at-least-once and idempotent: the window state remembers each counted event's
origin and features, so a replay after a crash republishes the same vector and a producer's
retry is a duplicate. A micro-batch is acknowledged only after its outputs are delivered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import faust
from prometheus_client import CollectorRegistry

from services.core.deadletter import SourcePosition
from services.core.declarations import Domain, Entity
from services.core.serde import CodecFactory
from services.features.feast_objects import feature_view_name
from services.featurizer.metrics import FeaturizerMetrics
from services.featurizer.online import OnlineBuffer, OnlineRow, write_rows
from services.featurizer.outputs import Outputs
from services.featurizer.processor import Accepted, EventProcessor, Rejected
from services.featurizer.secondary import SecondaryUpdater
from services.featurizer.settings import FeaturizerSettings
from services.featurizer.tables import BatchWindows, PartitionedTable, windows_table
from services.featurizer.transport import broker_url

log = logging.getLogger(__name__)


class FeaturizerApp(faust.App):
    """faust.App that flushes the online store before it stops."""

    online_flush: Any = None

    async def on_stop(self) -> None:
        if self.online_flush is not None:
            await self.online_flush()
        await super().on_stop()


class Wiring:
    """What every agent of one app shares."""

    def __init__(
        self,
        app: FeaturizerApp,
        settings: FeaturizerSettings,
        codecs: CodecFactory,
        metrics: FeaturizerMetrics,
    ) -> None:
        self.app = app
        self.settings = settings
        self.codecs = codecs
        self.metrics = metrics
        self.buffer = OnlineBuffer()
        self.outputs = Outputs(settings)
        self.batch = settings.featurizer_batch_size
        self.within = settings.featurizer_batch_wait_ms / 1000

    def raw_topic(self, name: str) -> Any:
        """Bytes in and out: decoding is ours, so bad input is data, not a crash."""
        return self.app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=self.settings.topic_partitions,
        )

    def windows(self, domain: Domain, entity: str) -> PartitionedTable:
        name = f"{domain.name}-{entity}-windows"
        return windows_table(self.app, name, self.settings.topic_partitions)


def build_app(
    settings: FeaturizerSettings,
    domains: list[Domain],
    codecs: CodecFactory,
    feature_store: Any,
    registry: CollectorRegistry,
) -> FeaturizerApp:
    app = FeaturizerApp(
        settings.featurizer_app_id,
        broker=broker_url(settings.bootstrap, settings.fetch_wait),
        store="memory://",
        datadir=str(Path(settings.home) / "faust"),
        topic_partitions=settings.topic_partitions,
        topic_disable_leader=True,
        web_enabled=False,
        autodiscover=False,
        broker_session_timeout=settings.session_timeout / 1000,
        broker_heartbeat_interval=settings.session_timeout / 6000,
        broker_commit_interval=settings.featurizer_commit_interval_ms / 1000,
        producer_linger=0.002,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,
    )
    wiring = Wiring(app, settings, codecs, FeaturizerMetrics.create(registry))
    _add_online_flush(wiring, feature_store)
    for domain in domains:
        _add_key_entity(wiring, domain)
        for entity in domain.secondary_entities:
            _add_secondary(wiring, domain, entity)
    return app


def _add_online_flush(wiring: Wiring, feature_store: Any) -> None:
    lock = asyncio.Lock()
    buffer, metrics = wiring.buffer, wiring.metrics
    max_rows = wiring.settings.featurizer_online_batch_rows
    max_age_s = wiring.settings.featurizer_online_flush_ms / 1000

    async def flush() -> None:
        async with lock:
            pending = buffer.take()
            if not pending:
                return
            started = time.perf_counter()
            loop = asyncio.get_running_loop()
            rows = await loop.run_in_executor(None, write_rows, feature_store, pending)
            metrics.write_seconds.observe(time.perf_counter() - started)
            metrics.write_rows.observe(rows)

    async def flush_when_due() -> None:
        if buffer.due(max_rows, max_age_s) and not lock.locked():
            await flush()

    wiring.app.online_flush = flush
    wiring.app.timer(interval=max_age_s)(flush_when_due)


def _add_key_entity(wiring: Wiring, domain: Domain) -> None:
    topics, metrics, outputs, name = domain.topics, wiring.metrics, wiring.outputs, domain.name
    table = wiring.windows(domain, domain.key_entity)
    processor = EventProcessor(domain, wiring.codecs.for_topic(topics.events))
    vector_codec = wiring.codecs.for_topic(topics.features)
    dlq_codec = wiring.codecs.for_topic(topics.events_dlq)
    forwards = [(e.key_field, topics.by_entity(e.name)) for e in domain.secondary_entities]
    view = feature_view_name(domain, domain.key_entity)

    def handle(message: Any, windows: BatchWindows) -> None:
        windows.partition = message.partition
        position = SourcePosition(message.topic, message.partition, message.offset)
        verdict = processor.process(message.key, message.value, position, windows)
        if isinstance(verdict, Accepted):
            outputs.send(topics.features, verdict.key.encode(), vector_codec.encode(verdict.vector))
            for key_field, topic in forwards:
                outputs.send(topic, str(verdict.vector[key_field]).encode(), message.value)
            row = OnlineRow(domain.key_field, verdict.key, verdict.event_time_ms, verdict.features)
            wiring.buffer.add(view, row)
            metrics.vectors.labels(name).inc()
            if verdict.replayed:
                metrics.replayed.labels(name).inc()
            lag = max(time.time() - verdict.event_time_ms / 1000, 0.0)
            metrics.lag_seconds.labels(name).observe(lag)
        elif isinstance(verdict, Rejected):
            letter = dlq_codec.encode(verdict.dead_letter)
            outputs.send(topics.events_dlq, message.key, letter)
            metrics.dead_letters.labels(name, verdict.reason).inc()
            log.info("dead letter: %s", verdict.dead_letter["detail"])
        else:
            metrics.duplicates.labels(name).inc()

    async def featurize(stream: Any) -> None:
        async for events in stream.take_events(wiring.batch, within=wiring.within):
            started = time.perf_counter()
            windows = BatchWindows(table)
            for event in events:
                handle(event.message, windows)
            windows.write_back()
            await outputs.flush()
            metrics.events.labels(name).inc(len(events))
            per_event = (time.perf_counter() - started) / len(events)
            metrics.process_seconds.labels(name).observe(per_event)

    source = wiring.raw_topic(topics.events)
    wiring.app.agent(source, name=f"featurize-{name}")(featurize)


def _add_secondary(wiring: Wiring, domain: Domain, entity: Entity) -> None:
    table = wiring.windows(domain, entity.name)
    updater = SecondaryUpdater(domain, entity, wiring.codecs.for_topic(domain.topics.events))
    view = feature_view_name(domain, entity.name)

    async def aggregate(stream: Any) -> None:
        async for events in stream.take_events(wiring.batch, within=wiring.within):
            windows = BatchWindows(table)
            for event in events:
                windows.partition = event.message.partition
                row = updater.apply(event.message.value, windows)
                if row is not None:
                    wiring.buffer.add(view, row)
            windows.write_back()

    source = wiring.raw_topic(domain.topics.by_entity(entity.name))
    wiring.app.agent(source, name=f"featurize-{domain.name}-{entity.name}")(aggregate)
