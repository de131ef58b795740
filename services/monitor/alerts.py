"""Alerts on ``ml.alerts`` and retraining requests on ``ml.retrain.requests``."""

from __future__ import annotations

import logging
import time
import uuid

from confluent_kafka import Producer

from services.core.declarations import Domain
from services.core.errors import StackError
from services.core.kafka import producer_config
from services.core.serde import CodecFactory, Record
from services.core.settings import StackSettings
from services.core.topics import ALERTS, RETRAIN_REQUESTS
from services.monitor.concept import SUBJECT, Alarm
from services.monitor.distribution import Finding
from services.monitor.floors import Breach
from services.monitor.metrics import MonitorMetrics

log = logging.getLogger(__name__)

CONCEPT_DRIFT = "concept_drift"
QUALITY = "quality"
FLUSH_TIMEOUT_S = 10.0


class AlertPublisher:
    def __init__(
        self,
        settings: StackSettings,
        domain: Domain,
        codecs: CodecFactory,
        metrics: MonitorMetrics,
    ) -> None:
        self._domain = domain
        self._metrics = metrics
        self._alerts = codecs.for_topic(ALERTS)
        self._requests = codecs.for_topic(RETRAIN_REQUESTS)
        self._producer = Producer(producer_config(settings))

    def concept_drift(self, alarm: Alarm, window_end_ms: int) -> Record:
        """Publishes the alarm's alert and the retraining request it asks for; returns the alert."""
        declared = self._domain.monitoring.concept
        threshold = {
            "adwin": declared.adwin_delta,
            "page_hinkley": declared.page_hinkley_threshold,
            "ddm": 3.0,  # river's DDM: drift at three standard deviations over its minimum
        }[alarm.detector]
        now = int(time.time() * 1000)
        alert = {
            "alert_id": uuid.uuid4().hex,
            "kind": CONCEPT_DRIFT,
            "domain": self._domain.name,
            "model_version": alarm.model_version,
            "served_by": alarm.served_by,
            "subject": SUBJECT,
            "statistic": alarm.detector,
            "value": alarm.error_rate_after,
            "threshold": threshold,
            "baseline": alarm.error_rate_before,
            "window_start": alarm.change_point_ms,
            "window_end": window_end_ms,
            "window_pairs": alarm.pairs_seen,
            "raised_at": now,
        }
        before = "" if alarm.error_rate_before is None else f"{alarm.error_rate_before:.3f} -> "
        request = {
            "request_id": uuid.uuid4().hex,
            "domain": self._domain.name,
            "model_version": alarm.model_version,
            "reason": f"concept drift on {alarm.model_version} ({alarm.served_by}): "
            f"{alarm.detector} saw the error rate go {before}{alarm.error_rate_after:.3f}",
            "alert_ids": [alert["alert_id"]],
            "change_point": alarm.change_point_ms,
            "requested_at": now,
        }
        key = f"{self._domain.name}|{alarm.model_version}|{CONCEPT_DRIFT}".encode()
        self._producer.produce(ALERTS, key=key, value=self._alerts.encode(alert))
        self._producer.produce(
            RETRAIN_REQUESTS, key=self._domain.name.encode(), value=self._requests.encode(request)
        )
        self._flush(f"the alert {alert['alert_id']}")
        self._metrics.alerts.labels(self._domain.name, CONCEPT_DRIFT).inc()
        self._metrics.retrain_requests.labels(self._domain.name).inc()
        log.warning("alert %s: %s", alert["alert_id"], request["reason"])
        return alert

    def distribution_drift(self, finding: Finding, version: str) -> Record:
        """Publishes one data- or prediction-drift alert; returns it."""
        alert_id = uuid.uuid4().hex
        alert: Record = {
            "alert_id": alert_id,
            "kind": finding.kind,
            "domain": self._domain.name,
            "model_version": version,
            "served_by": "champion",
            "subject": finding.subject,
            "statistic": finding.statistic,
            "value": finding.value,
            "threshold": finding.threshold,
            "baseline": None,
            "window_start": finding.window_start_ms,
            "window_end": finding.window_end_ms,
            "window_pairs": finding.window_values,
            "raised_at": int(time.time() * 1000),
        }
        key = f"{self._domain.name}|{version}|{finding.kind}".encode()
        self._producer.produce(ALERTS, key=key, value=self._alerts.encode(alert))
        self._flush(f"the alert {alert_id}")
        self._metrics.alerts.labels(self._domain.name, finding.kind).inc()
        log.warning(
            "alert %s: %s of %s on %s: %s %.3f > %.3f",
            alert_id,
            finding.kind,
            finding.subject,
            version,
            finding.statistic,
            finding.value,
            finding.threshold,
        )
        return alert

    def quality(self, breach: Breach, window_end_ms: int) -> Record:
        """Publishes one quality alert (a window figure past its declared floor)."""
        alert_id = uuid.uuid4().hex
        alert: Record = {
            "alert_id": alert_id,
            "kind": QUALITY,
            "domain": self._domain.name,
            "model_version": breach.model_version,
            "served_by": breach.served_by,
            "subject": breach.figure,
            "statistic": breach.figure,
            "value": breach.value,
            "threshold": breach.threshold,
            "baseline": None,
            "window_start": None,
            "window_end": window_end_ms,
            "window_pairs": breach.pairs,
            "raised_at": int(time.time() * 1000),
        }
        key = f"{self._domain.name}|{breach.model_version}|{QUALITY}".encode()
        self._producer.produce(ALERTS, key=key, value=self._alerts.encode(alert))
        self._flush(f"the alert {alert_id}")
        self._metrics.alerts.labels(self._domain.name, QUALITY).inc()
        log.warning(
            "alert %s: %s %s of %s (%s) past its floor %s",
            alert_id,
            breach.figure,
            f"{breach.value:.3f}",
            breach.model_version,
            breach.served_by,
            breach.threshold,
        )
        return alert

    def retrain_for_persistent_drift(self, finding: Finding, version: str, alert_id: str) -> None:
        """The data drift of ``alert_id`` is still there: asks for a model of the new data."""
        now = int(time.time() * 1000)
        request_id = uuid.uuid4().hex
        request: Record = {
            "request_id": request_id,
            "domain": self._domain.name,
            "model_version": version,
            "reason": f"data drift of {finding.subject} persists on {version}: "
            f"{finding.statistic} {finding.value:.3f} > {finding.threshold:.3f}",
            "alert_ids": [alert_id],
            "change_point": finding.window_start_ms,
            "requested_at": now,
        }
        self._producer.produce(
            RETRAIN_REQUESTS, key=self._domain.name.encode(), value=self._requests.encode(request)
        )
        self._flush(f"the retrain request {request_id}")
        self._metrics.retrain_requests.labels(self._domain.name).inc()
        log.warning("retrain request %s: %s", request_id, request["reason"])

    def _flush(self, what: str) -> None:
        if self._producer.flush(FLUSH_TIMEOUT_S):
            raise StackError(f"{what} was not acknowledged by the broker")

    def close(self) -> None:
        self._producer.flush(FLUSH_TIMEOUT_S)
