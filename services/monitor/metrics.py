"""The monitor's Prometheus metrics, in a registry passed in (names in core.metrics)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from services.core import metrics as names


@dataclass(frozen=True)
class MonitorMetrics:
    parts: Counter
    refused: Counter
    joined: Counter
    unlabelled: Counter
    unmatched: Counter
    evicted: Counter
    duplicates: Counter
    pending: Gauge
    recoveries: Counter
    labelled_pairs: Gauge
    accuracy: Gauge
    auc: Gauge
    logloss: Gauge
    coverage: Gauge
    psi: Gauge
    ks: Gauge
    alerts: Counter
    retrain_requests: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> MonitorMetrics:
        per_domain = names.MetricMaker(registry).with_leading("domain")
        quality = per_domain.with_leading("model_version", "served_by", "segment", "scope")
        return cls(
            labelled_pairs=quality.gauge(names.MONITOR_LABELLED_PAIRS, "Labelled pairs measured"),
            accuracy=quality.gauge(names.MONITOR_ACCURACY, "Share of decisions equal to the label"),
            auc=quality.gauge(names.MONITOR_AUC, "ROC AUC of the score against the label"),
            logloss=quality.gauge(names.MONITOR_LOGLOSS, "Mean log loss of the score"),
            coverage=per_domain.gauge(
                names.MONITOR_COVERAGE,
                "Labelled pairs over predictions read",
                ["model_version", "served_by"],
            ),
            psi=per_domain.gauge(
                names.MONITOR_DRIFT_PSI,
                "PSI of the live window against the champion's training reference",
                ["subject"],
            ),
            ks=per_domain.gauge(
                names.MONITOR_DRIFT_KS,
                "KS distance of the live window against the champion's training reference",
                ["subject"],
            ),
            alerts=per_domain.counter(names.MONITOR_ALERTS, "Alerts raised on ml.alerts", ["kind"]),
            retrain_requests=per_domain.counter(
                names.MONITOR_RETRAIN_REQUESTS, "Requests on ml.retrain.requests"
            ),
            parts=per_domain.counter(
                names.MONITOR_PARTS, "Predictions, outcomes and vectors read", ["kind"]
            ),
            refused=per_domain.counter(
                names.MONITOR_REFUSED,
                "Records that could not be used (outcomes go to <domain>.outcomes.dlq)",
                ["topic", "reason"],
            ),
            joined=per_domain.counter(
                names.MONITOR_JOINED,
                "Events published on <domain>.labelled, by whether their vector was joined",
                ["with_features"],
            ),
            unlabelled=per_domain.counter(
                names.MONITOR_UNLABELLED, "Predictions no outcome answered within the TTL"
            ),
            unmatched=per_domain.counter(
                names.MONITOR_UNMATCHED, "Outcomes of no prediction within the TTL"
            ),
            evicted=per_domain.counter(
                names.MONITOR_EVICTED,
                "Events taken out of the join before their TTL because a partition held "
                "join_max_entries (counted in unlabelled/unmatched too)",
            ),
            duplicates=per_domain.counter(
                names.MONITOR_DUPLICATES, "Parts seen again for an event (not joined twice)"
            ),
            pending=per_domain.gauge(
                names.MONITOR_PENDING,
                "Events waiting in the join (and joined ones kept until the TTL), per partition",
                ["partition"],
            ),
            recoveries=per_domain.counter(
                names.MONITOR_RECOVERIES,
                "Batches whose transaction failed: the monitor restored its join state of the "
                "last commit and ran them again, without a restart",
            ),
        )
