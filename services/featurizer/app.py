"""The featurizer as a faust app: one agent per declared domain, state in changelogged tables.

Processing is at-least-once and idempotent: the window state remembers the event ids it has
counted, so a replayed event is recognised instead of counted twice.
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
from services.featurizer.processor import Accepted, EventProcessor, Rejected
from services.featurizer.secondary import SecondaryUpdater
from services.featurizer.settings import FeaturizerSettings
from services.featurizer.transport import broker_url
from services.featurizer.windows import EntityWindow

log = logging.getLogger(__name__)

APP_ID = "streamml-featurizer"


class TableWindows:
    """A faust table seen as the processor's WindowStore (JSON values, UTF-8 keys)."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def get(self, key: str) -> EntityWindow | None:
        data = self._table.get(key.encode())
        return None if data is None else EntityWindow.from_json(data)

    def put(self, key: str, window: EntityWindow) -> None:
        self._table[key.encode()] = window.to_json()


class FeaturizerApp(faust.App):
    """faust.App that flushes the online store before it stops."""

    online_flush: Any = None

    async def on_stop(self) -> None:
        if self.online_flush is not None:
            await self.online_flush()
        await super().on_stop()


def build_app(
    settings: FeaturizerSettings,
    domains: list[Domain],
    codecs: CodecFactory,
    feature_store: Any,
    registry: CollectorRegistry,
) -> FeaturizerApp:
    app = FeaturizerApp(
        APP_ID,
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
    metrics = FeaturizerMetrics.create(registry)
    buffer = OnlineBuffer()
    flush_lock = asyncio.Lock()

    async def flush() -> None:
        async with flush_lock:
            pending = buffer.take()
            if not pending:
                return
            started = time.perf_counter()
            rows = await asyncio.get_running_loop().run_in_executor(
                None, write_rows, feature_store, pending
            )
            metrics.write_seconds.observe(time.perf_counter() - started)
            metrics.write_rows.observe(rows)

    app.online_flush = flush
    max_age_s = settings.featurizer_online_flush_ms / 1000

    @app.timer(interval=max_age_s)  # type: ignore[untyped-decorator]
    async def flush_when_due() -> None:
        if buffer.due(settings.featurizer_online_batch_rows, max_age_s):
            await flush()

    for domain in domains:
        _add_domain(app, domain, codecs, settings, metrics, buffer)
    return app


def _add_domain(
    app: FeaturizerApp,
    domain: Domain,
    codecs: CodecFactory,
    settings: FeaturizerSettings,
    metrics: FeaturizerMetrics,
    buffer: OnlineBuffer,
) -> None:
    topics = domain.topics

    def raw_topic(name: str) -> Any:  # bytes in and out: decoding is ours, so bad input is data
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.topic_partitions,
        )

    def windows_of(entity: str) -> TableWindows:
        # Keys are UTF-8 entity keys (raw codec); values the window state as JSON (faust's default).
        table = app.Table(
            f"{domain.name}-{entity}-windows", partitions=settings.topic_partitions, key_type=bytes
        )
        return TableWindows(table)

    source, vectors_out, dlq_out = (
        raw_topic(t) for t in (topics.events, topics.features, topics.events_dlq)
    )
    forwards = [
        (e.key_field, raw_topic(topics.by_entity(e.name))) for e in domain.secondary_entities
    ]
    windows = windows_of(domain.key_entity)
    processor = EventProcessor(domain, codecs.for_topic(topics.events))
    vector_codec = codecs.for_topic(topics.features)
    dlq_codec = codecs.for_topic(topics.events_dlq)
    view = feature_view_name(domain, domain.key_entity)
    key_field = domain.key_field
    name = domain.name

    async def featurize(stream: Any) -> None:
        async for event in stream.events():
            started = time.perf_counter()
            message = event.message
            metrics.events.labels(name).inc()
            position = SourcePosition(message.topic, message.partition, message.offset)
            verdict = processor.process(message.key, message.value, position, windows)
            if isinstance(verdict, Accepted):
                await vectors_out.send(
                    key=verdict.key.encode(), value=vector_codec.encode(verdict.vector)
                )
                for forward_key, forward in forwards:
                    await forward.send(
                        key=str(verdict.vector[forward_key]).encode(), value=message.value
                    )
                buffer.add(
                    view, OnlineRow(key_field, verdict.key, verdict.event_time_ms, verdict.features)
                )
                metrics.vectors.labels(name).inc()
                if verdict.replayed:
                    metrics.replayed.labels(name).inc()
                metrics.lag_seconds.labels(name).observe(
                    max(time.time() - verdict.event_time_ms / 1000, 0.0)
                )
            elif isinstance(verdict, Rejected):
                await dlq_out.send(key=message.key, value=dlq_codec.encode(verdict.dead_letter))
                metrics.dead_letters.labels(name, verdict.reason).inc()
                log.info("dead letter: %s", verdict.dead_letter["detail"])
            else:
                metrics.duplicates.labels(name).inc()
            metrics.process_seconds.labels(name).observe(time.perf_counter() - started)

    app.agent(source, name=f"featurize-{domain.name}")(featurize)
    for entity in domain.secondary_entities:
        _add_secondary(
            app,
            domain,
            entity,
            raw_topic(topics.by_entity(entity.name)),
            windows_of(entity.name),
            codecs,
            buffer,
        )


def _add_secondary(
    app: FeaturizerApp,
    domain: Domain,
    entity: Entity,
    source: Any,
    windows: TableWindows,
    codecs: CodecFactory,
    buffer: OnlineBuffer,
) -> None:
    updater = SecondaryUpdater(domain, entity, codecs.for_topic(domain.topics.events))
    view = feature_view_name(domain, entity.name)

    async def aggregate(stream: Any) -> None:
        async for value in stream:
            row = updater.apply(value, windows)
            if row is not None:
                buffer.add(view, row)

    app.agent(source, name=f"featurize-{domain.name}-{entity.name}")(aggregate)
