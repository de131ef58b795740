"""The trainer's Prometheus metrics, in a registry passed in (names in core.metrics)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from services.core import metrics as names


@dataclass(frozen=True)
class TrainerMetrics:
    requests: Counter
    steps: Counter
    busy: Gauge
    labelled_waiting: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> TrainerMetrics:
        per_domain = names.MetricMaker(registry).with_leading("domain")
        return cls(
            requests=per_domain.counter(
                names.TRAINER_REQUESTS,
                "Retraining requests read, by how they were answered",
                ["answer"],
            ),
            steps=per_domain.counter(
                names.TRAINER_STEPS, "Steps told on ml.models.events", ["step"]
            ),
            busy=per_domain.gauge(names.TRAINER_BUSY, "1 while a retrain runs"),
            labelled_waiting=per_domain.gauge(
                names.TRAINER_LABELLED_WAITING,
                "Labelled pairs after the change point, counted while waiting to train",
            ),
        )
