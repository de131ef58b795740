"""Online models learn from the outcomes that arrive after their predictions (test-then-train).

A river model in the line-up scores an event first; the row it scored is remembered
(``learning.py``); when the event's outcome arrives on ``<domain>.outcomes`` the model learns
that row with that label, once. Every so often the learned state is saved to the model store
as the next version and announced on ``ml.models`` as a candidate, so it can be promoted.

Outcomes are read from the end of the topic by a consumer outside any group: learning is a
best-effort addition, not part of the scorer's exactly-once output. What is learned between
two snapshots is lost if the scorer dies; a restarted scorer serves the registered version.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import OFFSET_END, Consumer, TopicPartition

from services.core.declarations import Domain
from services.core.errors import ModelError, StackError
from services.core.kafka import background_consumer_config
from services.core.serde import CodecFactory, Record
from services.core.settings import StackSettings
from services.models.river import RiverModel
from services.registry.artifacts import ModelStore
from services.registry.versions import publish, read_registry
from services.scorer.batch import Scored
from services.scorer.learning.learner import OnlineLearner, snapshot_record
from services.scorer.metrics import ScorerMetrics
from services.scorer.serving import Lineup

log = logging.getLogger(__name__)

POLL_RECORDS = 1000
METADATA_TIMEOUT_S = 10.0


class OutcomeLearning:
    def __init__(
        self,
        settings: StackSettings,
        domain: Domain,
        codecs: CodecFactory,
        store: ModelStore,
        metrics: ScorerMetrics,
        snapshot_every_s: float,
    ) -> None:
        self._settings = settings
        self._domain = domain
        self._codecs = codecs
        self._codec = codecs.for_topic(domain.topics.outcomes)
        self._store = store
        self._metrics = metrics
        self._snapshot_every_s = snapshot_every_s
        self._learners: dict[str, OnlineLearner] = {}  # by the loaded version
        self._consumer: Consumer | None = None

    def follow(self, lineup: Lineup) -> None:
        """Keeps one learner per river model in the line-up."""
        rivers = {
            s.version: s
            for s in (lineup.champion, lineup.canary, lineup.shadow)
            if s is not None and s.learns and isinstance(s.runtime, RiverModel)
        }
        for version in self._learners.keys() - rivers.keys():
            del self._learners[version]
        for version, serving in rivers.items():
            if version not in self._learners:
                assert isinstance(serving.runtime, RiverModel)
                self._learners[version] = OnlineLearner(
                    serving.runtime,
                    model_name=serving.model_name,
                    version=version,
                    now=time.monotonic(),
                    snapshot_every_s=self._snapshot_every_s,
                )
        if self._learners and self._consumer is None:
            self._consumer = self._subscribe()

    def remember(self, scored: Scored) -> None:
        """After a batch is committed: the rows each river model scored."""
        for serving, event_ids, rows in scored.inputs:
            learner = self._learners.get(serving.version)
            if learner is not None:
                learner.remember(event_ids, rows)

    def poll(self) -> None:
        """Learns from the outcomes that arrived; saves a snapshot when one is due."""
        if self._consumer is None or not self._learners:
            return
        outcomes: list[Record] = []
        for message in self._consumer.consume(POLL_RECORDS, 0):
            value = message.value()
            if message.error() is not None or value is None:
                continue
            try:
                outcomes.append(self._codec.decode(value))
            except Exception as exc:  # an outcome that cannot be read teaches nothing
                self._metrics.outcomes.labels(self._domain.name, "undecodable").inc()
                log.warning("outcome at offset %s not readable: %s", message.offset(), exc)
        now = time.monotonic()
        for learner in self._learners.values():
            if outcomes:
                counts = learner.learn(outcomes)
                for result in ("learned", "unknown", "duplicate"):
                    self._metrics.outcomes.labels(self._domain.name, result).inc(
                        getattr(counts, result)
                    )
            if learner.snapshot_due(now):
                self._snapshot(learner, now)

    def _snapshot(self, learner: OnlineLearner, now: float) -> None:
        parent_version = learner.version
        try:
            parent = read_registry(self._settings, self._codecs).get(
                learner.model_name, parent_version
            )
            saved = learner.save_snapshot(self._store, now)
            publish(
                self._settings,
                self._codecs,
                [snapshot_record(parent, saved, learner.progressive_metrics())],
            )
        except (ModelError, StackError, OSError) as exc:
            log.error("snapshot of %s v%s failed: %s", learner.model_name, parent_version, exc)
            return
        self._metrics.snapshots.labels(self._domain.name).inc()
        log.info("registered snapshot v%s of v%s as a candidate", saved.version, parent_version)

    def _subscribe(self) -> Consumer:
        topic = self._domain.topics.outcomes
        consumer = Consumer(background_consumer_config(self._settings, None))
        partitions = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S).topics[topic]
        consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in partitions.partitions])
        log.info("learning from %s as outcomes arrive", topic)
        return consumer

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
