"""The feature-log sink: ``<domain>.features`` into parquet part files, then the offsets.

At-least-once: a batch's part files are written (and renamed into place) before its offsets
are committed, so a crash can only make the next run write some records again. Those rows are
identical to the ones already written, which point-in-time reads cannot tell apart.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client import CollectorRegistry

from services.core.declarations import Domain
from services.core.errors import ConfigError, SerializationError
from services.core.kafka import background_consumer_config, producer_config
from services.core.lifecycle import StoppableLoop
from services.core.serde import CodecFactory
from services.core.topics import schema_subject
from services.featurelog.batch import PendingBatch
from services.featurelog.letters import DeadLetters
from services.featurelog.metrics import FeatureLogMetrics
from services.featurelog.parts import (
    arrow_schema,
    log_dir,
    log_row,
    prepare_dir,
    vector_fields,
    write_part,
)
from services.featurelog.settings import FeatureLogSettings

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.5  # the longest a consume call blocks, so a stop request is seen soon


def group_id(domain: Domain) -> str:
    return f"streamml-feature-log-{domain.name}"


class FeatureLogSink(StoppableLoop):
    stopping = "writing the current batch"

    def __init__(
        self,
        settings: FeatureLogSettings,
        domain: Domain,
        codecs: CodecFactory,
        registry: CollectorRegistry,
        *,
        consumer: Any = None,  # tests pass stand-ins for the two Kafka clients
        producer: Any = None,
    ) -> None:
        self._domain = domain
        self._topics = domain.topics
        fields = codecs.store.current(schema_subject(self._topics.features)).field_names
        missing = [name for name in vector_fields(domain) if name not in fields]
        if missing:
            raise ConfigError(f"{self._topics.features} has no field {missing}: nothing to log")
        self._codec = codecs.for_topic(self._topics.features)
        self._metrics = FeatureLogMetrics.create(registry)
        self._schema = arrow_schema(domain)
        self._consumer = consumer or Consumer(
            background_consumer_config(settings, group_id(domain))
        )
        self._letters = DeadLetters(
            producer or Producer(producer_config(settings)),
            self._topics.features_dlq,
            codecs.for_topic(self._topics.features_dlq),
        )
        self._dir = log_dir(settings, domain)
        prepare_dir(self._dir)
        self._pending = PendingBatch(
            settings.feature_log_batch_rows, settings.feature_log_flush_ms / 1000
        )

    def run(self) -> None:
        self._consumer.subscribe([self._topics.features], on_revoke=self._on_revoke)
        log.info("feature log: %s -> %s", self._topics.features, self._dir)
        try:
            while self._running:
                left = self._pending.seconds_left()
                wait = IDLE_WAIT_S if left is None else min(left, IDLE_WAIT_S)
                for message in self._consumer.consume(self._pending.room(), wait):
                    if message.error() is None:
                        self._take_in(message)
                    else:
                        log.warning("consume: %s", message.error())
                if self._pending.due():
                    self.flush()
            self.flush()
        finally:
            self._letters.close()
            self._consumer.close()

    def _take_in(self, message: Any) -> None:
        partition, offset, value = message.partition(), message.offset(), message.value()
        try:
            if value is None:
                raise SerializationError("the record has no value (a tombstone?)")
            row = log_row(self._domain, self._codec.decode(value), offset)
        except SerializationError as exc:
            self._letters.send(message, exc.reason, str(exc))
            self._metrics.dead_letters.labels(self._domain.name, exc.reason).inc()
            self._pending.skip(partition, offset)
            return
        self._pending.add(partition, offset, row)

    def flush(self) -> None:
        """Dead letters delivered and part files in place first, the offsets committed last."""
        batch = self._pending.take()
        if not batch.records:
            return
        self._letters.confirm()
        m, name = self._metrics, self._domain.name
        for partition, rows in batch.rows.items():
            started = time.perf_counter()
            write_part(self._dir, partition, batch.first_offsets[partition], rows, self._schema)
            m.write_seconds.labels(name).observe(time.perf_counter() - started)
            m.files_written.labels(name).inc()
            m.rows_written.labels(name).inc(len(rows))
        topic = self._topics.features
        offsets = [TopicPartition(topic, p, o) for p, o in batch.next_offsets.items()]
        self._consumer.commit(offsets=offsets, asynchronous=False)
        log.debug("wrote %d rows, committed %s", batch.row_count, batch.next_offsets)

    def _on_revoke(self, _consumer: Any, _partitions: list[TopicPartition]) -> None:
        """Before partitions move to another instance, what was read from them is written."""
        self.flush()
