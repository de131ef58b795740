"""The scorer's loop: consume a micro-batch, score it, publish it in one transaction.

Each micro-batch's predictions, shadow predictions, dead letters and consumed offsets are
committed together (confluent-kafka transactions), so a read_committed consumer sees every
prediction once, also when the scorer dies between two batches. A new line-up of models
(``follower.py``) takes over between two micro-batches.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from prometheus_client import CollectorRegistry

from services.core.deadletter import SourcePosition
from services.core.declarations import Domain
from services.core.kafka import consume_batch, consumer_config, producer_config
from services.core.lifecycle import StoppableLoop
from services.core.serde import CodecFactory
from services.core.transactions import TransactionalProducer, TransactionFailed, next_offsets
from services.registry.artifacts import ModelStore
from services.scorer.batch import BatchResult, BatchScorer, Incoming, ModelCaller, VectorScorer
from services.scorer.dedup import RecentIds, recent_predictions_for
from services.scorer.follower import RegistryFollower
from services.scorer.learning.labelled import LabelledLearning
from services.scorer.metrics import ScorerMetrics
from services.scorer.online import OnlineFeatureReader
from services.scorer.serving import Lineup
from services.scorer.settings import ScorerSettings

log = logging.getLogger(__name__)

LAG_EVERY_S = 1.0


def group_id(settings: ScorerSettings, domain: Domain) -> str:
    return f"{settings.scorer_app_id}-{domain.name}"


class Scorer(StoppableLoop):
    def __init__(
        self,
        settings: ScorerSettings,
        domain: Domain,
        codecs: CodecFactory,
        registry: CollectorRegistry,
        online: OnlineFeatureReader | None,
    ) -> None:
        self._settings = settings
        self._domain = domain
        self._topics = domain.topics
        self._metrics = ScorerMetrics.create(registry)
        self._codecs = codecs
        # The stream and outside callers (HTTP) score the same way, each on its own model
        # thread: a slow HTTP call never holds a stream batch up, nor the other way round.
        self._callers = [ModelCaller(settings.scorer_model_timeout_ms) for _ in range(2)]
        stream = VectorScorer(
            domain,
            settings.scorer_threshold,
            online,
            self._callers[0],
            scores_when_store_down=True,
        )
        self.vectors = VectorScorer(domain, settings.scorer_threshold, online, self._callers[1])
        self._batch = BatchScorer(
            domain,
            codecs.for_topic(self._topics.features),
            stream,
            RecentIds(settings.scorer_dedup_capacity),
        )
        self._consumer = self._new_consumer()
        self._producer = TransactionalProducer(
            producer_config(
                settings,
                **{
                    "transactional.id": f"{group_id(settings, domain)}-{settings.scorer_instance}",
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
            settings.scorer_instance,
        )
        self.lineup: Lineup = self._follower.lineup
        self._learning = LabelledLearning(
            settings,
            domain,
            codecs,
            ModelStore(settings.models_dir),
            self._metrics,
            settings.scorer_snapshot_every_s,
        )
        self._next_lag_at = 0.0
        self._assigned: set[tuple[str, int]] = set()

    def run(self) -> None:
        # After init(): it fences a killed predecessor and aborts its open transaction, which
        # would otherwise hold back the read_committed rebuild of what was already predicted.
        self._producer.init()
        self._batch.seen = recent_predictions_for(
            self._settings,
            self._topics.predictions,
            self._codecs.for_topic(self._topics.predictions),
        )
        self._subscribe(self._consumer)
        wait_s = self._settings.batch_wait(self._settings.scorer_batch_wait_ms) / 1000
        log.info("scorer for %s: consuming %s", self._domain.name, self._topics.features)
        try:
            while self._running:
                swapped = self._follower.poll()
                if swapped is not None:
                    self.lineup = swapped
                    self._learning.follow(swapped)
                messages = consume_batch(self._consumer, self._settings.scorer_batch_size, wait_s)
                batch = [self._incoming(m) for m in messages if m.error() is None]
                if batch:
                    try:
                        self._score_and_commit(batch)
                    except TransactionFailed as failure:
                        self._recover(failure)
                        continue
                    self._observe_lag(messages)
                self._learning.poll()
        finally:
            self._close()

    def _recover(self, failure: TransactionFailed) -> None:
        """Consuming again from the committed offsets is all there is to do: what the dedup
        remembers and online learning keeps changes only after a batch commits, and a batch
        whose commit went through unanswered is past those offsets, not read again."""
        log.warning("%s; scoring again from the last committed offsets", failure)
        self._metrics.recoveries.labels(self._domain.name).inc()
        self._consumer = self._producer.recover(
            lambda: self._subscribe(self._new_consumer()), lambda: self._running
        )

    def _new_consumer(self) -> Consumer:
        return Consumer(consumer_config(self._settings, group_id(self._settings, self._domain)))

    def _subscribe(self, consumer: Consumer) -> Consumer:
        consumer.subscribe(
            [self._topics.features],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        return consumer

    def _observe_lag(self, messages: list[Any]) -> None:
        """Records behind the end, per partition, from the watermarks of the last fetch."""
        now = time.monotonic()
        if now < self._next_lag_at:
            return
        self._next_lag_at = now + LAG_EVERY_S
        newest: dict[int, int] = {}
        for message in messages:
            newest[message.partition()] = message.offset()
        for partition, offset in newest.items():
            tp = TopicPartition(self._topics.features, partition)
            _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0:
                gauge = self._metrics.lag.labels(self._domain.name, str(partition))
                gauge.set(max(high - offset - 1, 0))

    def ready(self) -> bool:
        """A model serves (not only the heuristic) and the consumer owns partitions."""
        return self.lineup.champion.is_model and bool(self._assigned)

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned = {(tp.topic, tp.partition) for tp in partitions}
        log.info("assigned %d partitions of %s", len(partitions), self._topics.features)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned -= {(tp.topic, tp.partition) for tp in partitions}

    def _incoming(self, message: object) -> Incoming:
        m = message  # confluent_kafka.Message
        return Incoming(m.key(), m.value(), SourcePosition(m.topic(), m.partition(), m.offset()))  # type: ignore[attr-defined]

    def _score_and_commit(self, batch: list[Incoming]) -> None:
        started = time.perf_counter()
        result = self._batch.score(batch, self.lineup)
        self._metrics.inference_seconds.labels(self._domain.name).observe(
            time.perf_counter() - started
        )
        started = time.perf_counter()
        self._publish(batch, result)
        self._metrics.commit_seconds.labels(self._domain.name).observe(
            time.perf_counter() - started
        )
        self._batch.remember(result)
        self._observe(batch, result)

    def _publish(self, batch: list[Incoming], result: BatchResult) -> None:
        topics = self._topics
        predictions = self._codecs.for_topic(topics.predictions)
        letters = self._codecs.for_topic(topics.features_dlq)
        send = self._producer.send
        with self._producer.batch(next_offsets(item.source for item in batch)):
            for key, record in result.predictions:
                send(topics.predictions, key, predictions.encode(record))
            for key, record in result.shadow:
                send(topics.shadow_predictions, key, predictions.encode(record))
            for original_key, letter, _reason in result.dead_letters:
                send(self._topics.features_dlq, original_key, letters.encode(letter))

    def _observe(self, batch: list[Incoming], result: BatchResult) -> None:
        name = self._domain.name
        m = self._metrics
        m.batch_size.labels(name).observe(len(batch))
        now = time.time()
        served = Counter(
            (record["model_version"], record["served_by"])
            for _, record in (*result.predictions, *result.shadow)
        )
        for (version, served_by), count in served.items():
            m.predictions.labels(name, version, served_by).inc(count)
        end_to_end = m.end_to_end_seconds.labels(name)
        for _, record in (*result.predictions, *result.shadow):
            end_to_end.observe(max(now - record["event_time"] / 1000, 0.0))
        for _, _, reason in result.dead_letters:
            m.dead_letters.labels(name, reason).inc()
        m.duplicates.labels(name).inc(result.duplicates)
        for cause, count in result.fallback_causes.items():
            m.fallbacks.labels(name, cause).inc(count)

    def _close(self) -> None:
        log.info("scorer stopping: flushing and closing")
        self._follower.close()
        self._learning.close()
        for caller in self._callers:
            caller.close()
        self._producer.flush()
        self._consumer.close()
