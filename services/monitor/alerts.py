"""Alerts on ``ml.alerts`` and retraining requests on ``ml.retrain.requests``."""

from __future__ import annotations

import logging
import time
import uuid

from services.core.declarations import Domain
from services.core.delivery import Acknowledged
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
CLOSE_TIMEOUT_S = 10.0


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
        self._producer = Acknowledged(producer_config(settings))

    def concept_drift(self, alarm: Alarm, window_end_ms: int) -> Record:
        """Publishes the alarm's alert and, when the error rate rose, the retraining request it
        asks for; returns the alert."""
        declared = self._domain.monitoring.concept
        threshold = {
            "adwin": declared.adwin_delta,
            "page_hinkley": declared.page_hinkley_threshold,
            "ddm": 3.0,  # river's DDM: drift at three standard deviations over its minimum
        }[alarm.detector]
        alert = self._raise(
            CONCEPT_DRIFT,
            alarm.model_version,
            alarm.served_by,
            subject=SUBJECT,
            statistic=alarm.detector,
            value=alarm.error_rate_after,
            threshold=threshold,
            baseline=alarm.error_rate_before,
            window=(alarm.change_point_ms, window_end_ms, alarm.pairs_seen),
        )
        before = "" if alarm.error_rate_before is None else f"{alarm.error_rate_before:.3f} -> "
        if not alarm.worse:
            log.info(
                "the error rate of %s fell (%s): no retraining asked",
                alarm.model_version,
                before + f"{alarm.error_rate_after:.3f}",
            )
            return alert
        seen = (
            f"the error rate is still {before}{alarm.error_rate_after:.3f} "
            f"{self._domain.monitoring.concept.persists_for} after its alarm (persistent)"
            if alarm.persistent
            else f"{alarm.detector} saw the error rate go {before}{alarm.error_rate_after:.3f}"
        )
        self._request(
            alarm.model_version,
            f"concept drift on {alarm.model_version} ({alarm.served_by}): {seen}",
            alert["alert_id"],
            alarm.change_point_ms,
        )
        return alert

    def distribution_drift(self, finding: Finding, version: str) -> Record:
        """Publishes one data- or prediction-drift alert; returns it."""
        return self._raise(
            finding.kind,
            version,
            "champion",
            subject=finding.subject,
            statistic=finding.statistic,
            value=finding.value,
            threshold=finding.threshold,
            baseline=None,
            window=(finding.window_start_ms, finding.window_end_ms, finding.window_values),
        )

    def quality(self, breach: Breach, window_end_ms: int) -> Record:
        """Publishes one quality alert (a window figure past its declared floor)."""
        return self._raise(
            QUALITY,
            breach.model_version,
            breach.served_by,
            subject=breach.figure,
            statistic=breach.figure,
            value=breach.value,
            threshold=breach.threshold,
            baseline=None,
            window=(None, window_end_ms, breach.pairs),
        )

    def retrain_for_persistent_drift(self, finding: Finding, version: str, alert_id: str) -> None:
        """The data drift of ``alert_id`` is still there: asks for a model of the new data."""
        self._request(
            version,
            f"data drift of {finding.subject} persists on {version}: "
            f"{finding.statistic} {finding.value:.3f} > {finding.threshold:.3f}",
            alert_id,
            finding.window_start_ms,
        )

    def _raise(
        self,
        kind: str,
        version: str,
        served_by: str,
        *,
        subject: str,
        statistic: str,
        value: float,
        threshold: float,
        baseline: float | None,
        window: tuple[int | None, int, int],  # event time of its start (if known), end; size
    ) -> Record:
        """One alert on ``ml.alerts``, acknowledged by the broker before it is counted."""
        start, end, size = window
        alert: Record = {
            "alert_id": uuid.uuid4().hex,
            "kind": kind,
            "domain": self._domain.name,
            "model_version": version,
            "served_by": served_by,
            "subject": subject,
            "statistic": statistic,
            "value": value,
            "threshold": threshold,
            "baseline": baseline,
            "window_start": start,
            "window_end": end,
            "window_pairs": size,
            "raised_at": int(time.time() * 1000),
        }
        key = f"{self._domain.name}|{version}|{kind}".encode()
        self._producer.send(ALERTS, key, self._alerts.encode(alert))
        self._producer.confirm(f"the alert {alert['alert_id']}")
        self._metrics.alerts.labels(self._domain.name, kind).inc()
        before = "" if baseline is None else f"{baseline:.3f} -> "
        log.warning(
            "alert %s: %s on %s (%s): %s %s %s%.3f (threshold %g)",
            alert["alert_id"],
            kind,
            version,
            served_by,
            subject,
            statistic,
            before,
            value,
            threshold,
        )
        return alert

    def _request(
        self, version: str, reason: str, alert_id: str, change_point_ms: int | None
    ) -> None:
        """One request on ``ml.retrain.requests`` naming the alert that caused it."""
        request_id = uuid.uuid4().hex
        request: Record = {
            "request_id": request_id,
            "domain": self._domain.name,
            "model_version": version,
            "reason": reason,
            "alert_ids": [alert_id],
            "change_point": change_point_ms,
            "requested_at": int(time.time() * 1000),
        }
        self._producer.send(
            RETRAIN_REQUESTS, self._domain.name.encode(), self._requests.encode(request)
        )
        self._producer.confirm(f"the retrain request {request_id}")
        self._metrics.retrain_requests.labels(self._domain.name).inc()
        log.warning("retrain request %s: %s", request_id, reason)

    def close(self) -> None:
        self._producer.close(CLOSE_TIMEOUT_S)
