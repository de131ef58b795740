"""The quality figures, kept from ``<domain>.labelled`` and published on ``<domain>.monitoring``.

The watch reads ``<domain>.labelled`` (read_committed, so each joined event exactly once) and
``<domain>.predictions`` (the denominator of coverage) from their beginning, outside any
consumer group: after a restart it reads them again, so its figures are those of every pair
ever joined, never counted twice, whatever happened to the process. It publishes a snapshot of
every (version, served_by, segment, scope) each ``snapshot_every_s`` once it has read up to the
end it found at its start (before that its figures would be partial).
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from services.core.declarations import Domain
from services.core.errors import SerializationError, StackError
from services.core.history import read_history
from services.core.kafka import history_consumer_config, producer_config
from services.core.serde import CodecFactory, Record
from services.core.settings import StackSettings
from services.core.topics import ALERTS
from services.monitor.alerts import QUALITY, AlertPublisher
from services.monitor.concept import ConceptWatch
from services.monitor.drift_watch import DriftWatch
from services.monitor.floors import FloorWatch
from services.monitor.metrics import MonitorMetrics
from services.monitor.quality import ALL, DRIFT, TOTAL, WINDOW, Figures, Pair, Quality

log = logging.getLogger(__name__)

POLL_RECORDS = 5_000
METADATA_TIMEOUT_S = 10.0


class QualityWatch:
    def __init__(
        self,
        settings: StackSettings,
        domain: Domain,
        codecs: CodecFactory,
        snapshot_every_s: float,
        metrics: MonitorMetrics,
    ) -> None:
        topics = domain.topics
        self._domain = domain
        self._labelled = topics.labelled
        self._codecs = {
            topics.labelled: codecs.for_topic(topics.labelled),
            topics.predictions: codecs.for_topic(topics.predictions),
        }
        self._snapshot_codec = codecs.for_topic(topics.monitoring)
        self._window_pairs = domain.monitoring.quality_window_pairs
        self.quality = Quality(self._window_pairs)
        self._snapshot_every_s = snapshot_every_s
        self._next_snapshot = 0.0
        self._consumer = Consumer(history_consumer_config(settings))
        self._consumer.assign(_from_the_beginning(self._consumer, list(self._codecs)))
        self._unread = {
            (tp.topic, tp.partition) for tp in self._consumer.assignment()
        }  # partitions not yet read to the end they had at the start
        self._producer = Producer(producer_config(settings))
        self.snapshots = 0
        self._concept = ConceptWatch(domain.monitoring.concept)
        self._metrics = metrics
        self._alerts = AlertPublisher(settings, domain, codecs, metrics)
        self.drift = DriftWatch(settings, domain, codecs, self._alerts, metrics)
        self.alerts: list[Record] = []
        self.suppressed = 0  # alarms on pairs read again at a start, before catching up
        self._floors = FloorWatch(domain.monitoring.quality)
        for alert in read_history(settings, ALERTS):  # what an earlier instance raised
            if alert["domain"] == domain.name and alert["kind"] == QUALITY:
                self._floors.already_raised(
                    alert["model_version"], alert["served_by"], alert["subject"]
                )
        self._latest_event_ms = 0

    @property
    def caught_up(self) -> bool:
        return not self._unread

    def poll(self, now: float) -> None:
        """Reads what has arrived; publishes a snapshot when one is due."""
        for message in self._consumer.consume(POLL_RECORDS, 0):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._reached_end((str(message.topic()), int(message.partition() or 0)))
                else:
                    log.warning("quality watch: %s", error)
                continue
            self._read(str(message.topic()), message.value())
        self.drift.poll(now)
        if self.caught_up and now >= self._next_snapshot:
            self.publish_snapshot()
            self._next_snapshot = now + self._snapshot_every_s

    def _reached_end(self, where: tuple[str, int]) -> None:
        if where not in self._unread:
            return
        self._unread.discard(where)
        if not self._unread:
            log.info(
                "quality watch: caught up (%d labelled pairs, %d predictions read; %d drift "
                "alarms on them not raised again); live from here",
                self.quality.labelled,
                sum(self.quality.predictions.values()),
                self.suppressed,
            )

    def publish_snapshot(self) -> None:
        quality, at = self.quality, int(time.time() * 1000)
        topic = self._domain.topics.monitoring
        for key in quality.figure_keys():
            version, served_by, segment = key
            for scope, figures in ((WINDOW, quality.window(key)), (TOTAL, quality.total(key))):
                record = self._snapshot(key, scope, figures, at)
                self._gauge(record)
                name = f"{version}|{served_by}|{segment}|{scope}".encode()
                self._producer.produce(topic, key=name, value=self._snapshot_codec.encode(record))
        for key in quality.figure_keys():
            version, served_by, segment = key
            if segment == ALL:
                for breach in self._floors.judge(version, served_by, quality.window(key)):
                    self.alerts.append(self._alerts.quality(breach, self._latest_event_ms))
        for record in self._drift_snapshots(at):
            name = f"{record['model_version']}|champion|{record['segment']}|{DRIFT}".encode()
            self._producer.produce(topic, key=name, value=self._snapshot_codec.encode(record))
        left = self._producer.flush(METADATA_TIMEOUT_S)
        if left:  # the broker is away: they stay queued and go out when it is back
            log.warning(
                "%d quality snapshots not yet acknowledged on %s; they are sent when the broker "
                "answers again",
                left,
                topic,
            )
        self.snapshots += 1

    def _gauge(self, record: Record) -> None:
        metrics, name = self._metrics, self._domain.name
        labels = (name, record["model_version"], record["served_by"], record["segment"])
        scoped = (*labels, record["scope"])
        metrics.labelled_pairs.labels(*scoped).set(record["joined"])
        for gauge, value in (
            (metrics.accuracy, record["accuracy"]),
            (metrics.auc, record["auc"]),
            (metrics.logloss, record["logloss"]),
        ):
            if value is not None:
                gauge.labels(*scoped).set(value)
        if record["coverage"] is not None:
            metrics.coverage.labels(*labels[:3]).set(record["coverage"])

    def close(self) -> None:
        self._consumer.close()
        self._producer.flush(METADATA_TIMEOUT_S)
        self.drift.close()
        self._alerts.close()

    def _read(self, topic: str, value: bytes | None) -> None:
        if value is None:
            return
        try:
            record = self._codecs[topic].decode(value)
        except SerializationError as exc:  # the scorer's and our own topics: not expected
            log.warning("quality watch: a %s record does not decode: %s", topic, exc)
            return
        if topic != self._labelled:
            self.quality.predicted(record["model_version"], str(record["served_by"]))
            return
        prediction = record["prediction"]
        pair = Pair(
            score=float(prediction["score"]),
            decision=bool(prediction["decision"]),
            label=bool(record["label"]),
            label_delay_ms=int(record["outcome_at"]) - int(record["event_time"]),
        )
        features = record["features"] or {}
        bands = [
            band
            for segment in self._domain.monitoring.segments
            if (band := segment.band_of(features.get(segment.field_name))) is not None
        ]
        version, served_by = prediction["model_version"], str(prediction["served_by"])
        self.quality.add(version, served_by, bands, pair)
        event_time = int(record["event_time"])
        self._latest_event_ms = max(self._latest_event_ms, event_time)
        alarm = self._concept.add(version, served_by, pair.decision != pair.label, event_time)
        if alarm is None:
            return
        if not self.caught_up:
            # Pairs read again at a start: their drift was alarmed by the instance that read
            # them live (or it happened while none ran, see docs/monitor.md).
            self.suppressed += 1
            return
        self.alerts.append(self._alerts.concept_drift(alarm, event_time))

    def _snapshot(self, key: tuple[str, str, str], scope: str, figures: Figures, at: int) -> Record:
        version, served_by, segment = key
        overall = segment == ALL
        return {
            "domain": self._domain.name,
            "model_version": version,
            "served_by": served_by,
            "segment": segment,
            "scope": scope,
            "joined": figures.joined,
            "predictions": self.quality.predictions.get((version, served_by), 0) if overall else 0,
            "coverage": self.quality.coverage(version, served_by)
            if overall and scope == TOTAL
            else None,
            "accuracy": figures.accuracy,
            "auc": figures.auc,
            "logloss": figures.logloss,
            "precision": figures.precision,
            "recall": figures.recall,
            "label_delay_p50_ms": figures.label_delay_p50_ms,
            "label_delay_p95_ms": figures.label_delay_p95_ms,
            "psi": None,
            "ks": None,
            "window_pairs": self._window_pairs,
            "snapshot_at": at,
        }

    def _drift_snapshots(self, at: int) -> list[Record]:
        """One record per subject the live window was last compared on (scope drift)."""
        watch = self.drift.watch
        return [
            {
                "domain": self._domain.name,
                "model_version": watch.version or "",
                "served_by": "champion",
                "segment": subject,
                "scope": DRIFT,
                "joined": watch.window_size(subject),
                "predictions": 0,
                "coverage": None,
                "accuracy": None,
                "auc": None,
                "logloss": None,
                "precision": None,
                "recall": None,
                "label_delay_p50_ms": None,
                "label_delay_p95_ms": None,
                "psi": by_psi,
                "ks": by_ks,
                "window_pairs": self._domain.monitoring.data.window_vectors,
                "snapshot_at": at,
            }
            for subject, (by_psi, by_ks) in sorted(watch.latest.items())
        ]


def _from_the_beginning(consumer: Consumer, topics: list[str]) -> list[TopicPartition]:
    assigned = []
    for topic in topics:
        metadata = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S).topics[topic]
        if metadata.error is not None:
            raise StackError(f"topic {topic}: {metadata.error}")
        assigned += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions]
    return assigned
