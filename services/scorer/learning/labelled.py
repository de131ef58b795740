"""Online models learn from the monitor's join, ``<domain>.labelled`` (test-then-train).

The monitor publishes each prediction joined with its outcome once, with the model's whole
input as it was served: the vector and the online features the scorer read. Each river model in
the line-up reads that topic with a consumer of its own, outside any group (learning is not part
of the scorer's exactly-once output), and learns every pair once (``learner.py``). Every so
often its state is saved to the model store as the next version, with where it was in the topic,
and announced on ``ml.models`` as a candidate, so it can be promoted.

Where a learner starts: where the snapshot it was loaded from stopped (from its card), so a
restarted scorer resumes without learning a pair twice or skipping one; a trained version (no
snapshot yet) starts at the end of the topic as it is when the model is loaded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
from confluent_kafka import Consumer, Message, TopicPartition

from services.core.declarations import Domain
from services.core.errors import ModelError, StackError
from services.core.kafka import background_consumer_config
from services.core.labelled import labelled_input
from services.core.serde import CodecFactory, Record
from services.core.settings import StackSettings
from services.models.river import RiverModel
from services.registry.artifacts import ModelStore
from services.registry.versions import publish, read_registry
from services.scorer.learning.learner import (
    Example,
    OnlineLearner,
    resume_positions,
    snapshot_record,
)
from services.scorer.metrics import ScorerMetrics
from services.scorer.serving import Lineup, Serving

log = logging.getLogger(__name__)

POLL_RECORDS = 1000
METADATA_TIMEOUT_S = 10.0
UNDECODABLE = "undecodable"


class LabelledLearning:
    """One learner, and one reader of ``<domain>.labelled``, per river model in the line-up."""

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
        self._topic = domain.topics.labelled
        self._codec = codecs.for_topic(self._topic)
        self._store = store
        self._metrics = metrics
        self._snapshot_every_s = snapshot_every_s
        self._learners: dict[str, tuple[OnlineLearner, Consumer]] = {}  # by the loaded version

    def follow(self, lineup: Lineup) -> None:
        """Keeps one learner per river model in the line-up."""
        rivers = {
            s.version: s
            for s in (lineup.champion, lineup.canary, lineup.shadow)
            if s is not None and s.learns and isinstance(s.runtime, RiverModel)
        }
        for version in self._learners.keys() - rivers.keys():
            self._learners.pop(version)[1].close()
        for version, serving in rivers.items():
            if version not in self._learners:
                try:
                    self._learners[version] = self._start(serving)
                except (ModelError, StackError, OSError) as exc:
                    log.error("v%s will not learn: %s", version, exc)

    def _start(self, serving: Serving) -> tuple[OnlineLearner, Consumer]:
        assert isinstance(serving.runtime, RiverModel)
        card = self._store.card(serving.model_name, serving.version)
        consumer = Consumer(background_consumer_config(self._settings, None))
        try:
            resume = resume_positions(card)
            positions = self._assign(consumer, resume)
        except Exception:
            consumer.close()
            raise
        learner = OnlineLearner(
            serving.runtime,
            model_name=serving.model_name,
            version=serving.version,
            now=time.monotonic(),
            positions=positions,
            snapshot_every_s=self._snapshot_every_s,
        )
        where = "where its snapshot stopped" if resume else "at the end"
        log.info("v%s learns from %s, starting %s", serving.version, self._topic, where)
        return learner, consumer

    def _assign(self, consumer: Consumer, resume: dict[int, int]) -> dict[int, int]:
        """Assigns every partition at its resume offset, or at its end; returns the offsets."""
        topic = self._topic
        metadata = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise StackError(f"topic {topic} is not there to learn from")
        positions: dict[int, int] = {}
        for partition in sorted(metadata.partitions):
            if partition in resume:
                positions[partition] = resume[partition]
            else:
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=METADATA_TIMEOUT_S
                )
                positions[partition] = high
        consumer.assign([TopicPartition(topic, p, o) for p, o in positions.items()])
        return positions

    def poll(self) -> None:
        """Learns from the pairs that arrived; saves a snapshot when one is due."""
        now = time.monotonic()
        for learner, consumer in self._learners.values():
            messages = [
                m
                for m in consumer.consume(POLL_RECORDS, 0)
                if m.error() is None and m.value() is not None
            ]
            if messages:
                counts = learner.learn(self._examples(messages, learner))
                for result in ("learned", "duplicate", "incomplete"):
                    self._count(result, getattr(counts, result))
            if learner.snapshot_due(now):
                self._snapshot(learner, now)

    def _examples(self, messages: Sequence[Message], learner: OnlineLearner) -> list[Example]:
        names = learner.model.feature_names
        examples = []
        for message in messages:
            partition, offset = message.partition() or 0, message.offset() or 0
            try:
                record = self._codec.decode(message.value())  # type: ignore[arg-type]
            except Exception as exc:  # a record that cannot be read teaches nothing
                self._count(UNDECODABLE, 1)
                log.warning("%s %s/%s not readable: %s", self._topic, partition, offset, exc)
                learner.passed(partition, offset)
                continue
            row = model_input(self._domain, record, names)
            event_id = str(record["event_id"])
            examples.append(Example(partition, offset, event_id, row, bool(record["label"])))
        return examples

    def _count(self, result: str, n: int) -> None:
        if n:
            self._metrics.labelled.labels(self._domain.name, result).inc(n)

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

    def close(self) -> None:
        for _, consumer in self._learners.values():
            consumer.close()
        self._learners.clear()


def model_input(domain: Domain, labelled: Record, names: tuple[str, ...]) -> np.ndarray | None:
    """``labelled_input`` as a float32 row."""
    row = labelled_input(domain, labelled, names)
    return None if row is None else np.asarray(row, dtype=np.float32)
