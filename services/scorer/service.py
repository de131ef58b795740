"""The scorer's loop: consume a micro-batch, score it, publish it in one transaction.

Each micro-batch's predictions, dead letters and consumed offsets are committed together
(confluent-kafka transactions), so a read_committed consumer sees every prediction once,
also when the scorer dies between two batches.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer
from prometheus_client import CollectorRegistry

from services.core.deadletter import SourcePosition
from services.core.declarations import Domain
from services.core.kafka import consumer_config, producer_config
from services.core.lifecycle import StoppableLoop
from services.core.modelstore import ModelStore
from services.core.serde import CodecFactory
from services.core.transactions import TransactionalProducer, next_offsets
from services.scorer.batch import BatchResult, BatchScorer, Incoming
from services.scorer.dedup import RecentIds
from services.scorer.follower import RegistryFollower
from services.scorer.metrics import ScorerMetrics
from services.scorer.serving import heuristic_serving
from services.scorer.settings import ScorerSettings

log = logging.getLogger(__name__)


def group_id(domain: Domain) -> str:
    return f"streamml-scorer-{domain.name}"


class Scorer(StoppableLoop):
    def __init__(
        self,
        settings: ScorerSettings,
        domain: Domain,
        codecs: CodecFactory,
        registry: CollectorRegistry,
    ) -> None:
        self._settings = settings
        self._domain = domain
        self._topics = domain.topics
        self._metrics = ScorerMetrics.create(registry)
        self._codecs = codecs
        self._fallback = heuristic_serving(domain)
        self._serving = self._fallback
        self._batch = BatchScorer(
            domain,
            codecs.for_topic(self._topics.features),
            settings.scorer_threshold,
            RecentIds(settings.scorer_dedup_capacity),
        )
        self._consumer = Consumer(consumer_config(settings, group_id(domain)))
        self._producer = TransactionalProducer(
            producer_config(
                settings,
                **{
                    "transactional.id": f"{group_id(domain)}-{settings.scorer_instance}",
                    "linger.ms": 0,
                },
            ),
            self._consumer,
        )
        self._follower = RegistryFollower(
            settings,
            domain,
            codecs,
            ModelStore(settings.models_dir),
            settings.scorer_threads,
            self._metrics,
        )

    @property
    def serving_version(self) -> str:
        return self._serving.version

    def run(self) -> None:
        self._producer.init()
        self._consumer.subscribe([self._topics.features])
        wait_s = self._settings.scorer_batch_wait_ms / 1000
        log.info("scorer for %s: consuming %s", self._domain.name, self._topics.features)
        try:
            while self._running:
                swapped = self._follower.poll()
                if swapped is not None:
                    self._serving = swapped
                messages = self._consumer.consume(self._settings.scorer_batch_size, wait_s)
                batch = [self._incoming(m) for m in messages if m.error() is None]
                if batch:
                    self._score_and_commit(batch)
        finally:
            self._close()

    def _incoming(self, message: object) -> Incoming:
        m = message  # confluent_kafka.Message
        return Incoming(m.key(), m.value(), SourcePosition(m.topic(), m.partition(), m.offset()))  # type: ignore[attr-defined]

    def _score_and_commit(self, batch: list[Incoming]) -> None:
        started = time.perf_counter()
        result = self._batch.score(batch, self._serving, self._fallback)
        self._metrics.inference_seconds.labels(self._domain.name).observe(
            time.perf_counter() - started
        )
        self._publish(batch, result)
        self._batch.remember(result)
        self._observe(batch, result)

    def _publish(self, batch: list[Incoming], result: BatchResult) -> None:
        predictions = self._codecs.for_topic(self._topics.predictions)
        letters = self._codecs.for_topic(self._topics.features_dlq)
        send = self._producer.send
        with self._producer.batch(next_offsets(item.source for item in batch)):
            for key, record in result.predictions:
                send(self._topics.predictions, key, predictions.encode(record))
            for original_key, letter, _reason in result.dead_letters:
                send(self._topics.features_dlq, original_key, letters.encode(letter))

    def _observe(self, batch: list[Incoming], result: BatchResult) -> None:
        name = self._domain.name
        m = self._metrics
        m.batch_size.labels(name).observe(len(batch))
        now = time.time()
        for _, record in result.predictions:
            m.predictions.labels(name, record["model_version"], record["served_by"]).inc()
            m.end_to_end_seconds.labels(name).observe(max(now - record["event_time"] / 1000, 0.0))
        for _, _, reason in result.dead_letters:
            m.dead_letters.labels(name, reason).inc()
        m.duplicates.labels(name).inc(result.duplicates)
        for cause, count in result.fallback_causes.items():
            m.fallbacks.labels(name, cause).inc(count)

    def _close(self) -> None:
        log.info("scorer stopping: flushing and closing")
        self._follower.close()
        self._producer.flush()
        self._consumer.close()
