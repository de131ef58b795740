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
    duplicates: Counter
    pending: Gauge
    recoveries: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> MonitorMetrics:
        per_domain = names.MetricMaker(registry).with_leading("domain")
        return cls(
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
