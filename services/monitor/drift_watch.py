"""The live side of drift: ``<domain>.features`` and ``<domain>.predictions`` from their end,
compared with the champion's training reference; findings become alerts and, when a data drift
persists, a retraining request."""

from __future__ import annotations

import logging

from confluent_kafka import OFFSET_END, Consumer, TopicPartition

from services.core.declarations import Domain
from services.core.errors import ModelError, SerializationError, StackError
from services.core.kafka import consumer_config
from services.core.serde import CodecFactory
from services.core.settings import StackSettings
from services.monitor.alerts import AlertPublisher
from services.monitor.distribution import DistributionWatch, Finding
from services.monitor.metrics import MonitorMetrics
from services.registry.artifacts import ModelStore
from services.registry.versions import CHAMPION, read_registry

log = logging.getLogger(__name__)

POLL_RECORDS = 5_000
REFERENCE_REFRESH_S = 30.0
METADATA_TIMEOUT_S = 10.0


class DriftWatch:
    def __init__(
        self,
        settings: StackSettings,
        domain: Domain,
        codecs: CodecFactory,
        alerts: AlertPublisher,
        metrics: MonitorMetrics,
    ) -> None:
        self._metrics = metrics
        topics = domain.topics
        self._settings, self._domain, self._codecs, self._alerts = settings, domain, codecs, alerts
        self._features, self._predictions = topics.features, topics.predictions
        self._decode = {
            t: codecs.for_topic(t).decode for t in (topics.features, topics.predictions)
        }
        self._store = ModelStore(settings.models_dir)
        self.watch = DistributionWatch(domain.monitoring.data)
        self._next_refresh = 0.0
        self._alert_of: dict[str, str] = {}  # subject -> its latest alert id
        self._consumer = Consumer(consumer_config(settings, None))
        assigned = []
        for topic in (topics.features, topics.predictions):
            metadata = self._consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S).topics[topic]
            assigned += [TopicPartition(topic, p, OFFSET_END) for p in metadata.partitions]
        self._consumer.assign(assigned)

    def poll(self, now: float) -> None:
        if now >= self._next_refresh:
            self._next_refresh = now + REFERENCE_REFRESH_S
            self._refresh_reference()
        if self.watch.version is None:
            self._consumer.consume(POLL_RECORDS, 0)  # nothing to compare with: keep up anyway
            return
        for message in self._consumer.consume(POLL_RECORDS, 0):
            value = message.value()
            if message.error() is not None or value is None:
                continue
            topic = message.topic()
            try:
                record = self._decode[str(topic)](value)
            except SerializationError:
                continue  # the scorer's and featurizer's DLQs have them
            if topic == self._features:
                event_time = int(record[self._domain.event_time_field])
                findings = self.watch.add_vector(record, event_time)
            elif (
                record["model_version"] == self.watch.version
                and str(record["served_by"]) == CHAMPION
            ):
                findings = self.watch.add_score(float(record["score"]), int(record["event_time"]))
            else:
                continue
            for finding in findings:
                self._raise(finding)
        for subject, (by_psi, by_ks) in self.watch.latest.items():
            self._metrics.psi.labels(self._domain.name, subject).set(by_psi)
            self._metrics.ks.labels(self._domain.name, subject).set(by_ks)

    def _raise(self, finding: Finding) -> None:
        version = self.watch.version or ""
        if finding.persistent:
            alert_id = self._alert_of.get(finding.subject)
            if alert_id is not None and finding.kind == "data_drift":
                self._alerts.retrain_for_persistent_drift(finding, version, alert_id)
            return
        alert = self._alerts.distribution_drift(finding, version)
        self._alert_of[finding.subject] = alert["alert_id"]

    def _refresh_reference(self) -> None:
        try:
            champion = read_registry(self._settings, self._codecs).champion(self._domain.model_name)
            if champion is None or champion.version == self.watch.version:
                return
            reference = self._store.card(champion.model_name, champion.version).get("reference")
        except (StackError, ModelError) as exc:
            log.warning("drift: the champion's reference cannot be read: %s", exc)
            return
        if not reference:
            log.warning(
                "drift: %s has no training reference in its card; data and prediction drift "
                "are not measured for it",
                champion.key,
            )
            return
        self.watch.use_reference(champion.version, reference)
        log.info("drift: comparing live vectors and scores with %s's reference", champion.key)

    def close(self) -> None:
        self._consumer.close()
