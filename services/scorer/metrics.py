"""The scorer's Prometheus metrics, in a registry passed in."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.core import metrics as names


@dataclass(frozen=True)
class ScorerMetrics:
    predictions: Counter
    batch_size: Histogram
    inference_seconds: Histogram
    commit_seconds: Histogram
    end_to_end_seconds: Histogram
    dead_letters: Counter
    duplicates: Counter
    model_loads: Counter
    fallbacks: Counter
    labelled: Counter
    snapshots: Counter
    lag: Gauge
    recoveries: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ScorerMetrics:
        make = names.MetricMaker(registry)
        per_domain = make.with_leading("domain")
        return cls(
            predictions=per_domain.counter(
                names.SCORER_PREDICTIONS,
                "Predictions published",
                ["model_version", "served_by"],
            ),
            batch_size=per_domain.histogram(
                names.SCORER_BATCH_SIZE,
                "Events per micro-batch",
                buckets=names.BATCH_BUCKETS,
            ),
            inference_seconds=per_domain.histogram(
                names.SCORER_INFERENCE_SECONDS,
                "Model time per micro-batch",
                buckets=names.LATENCY_BUCKETS,
            ),
            commit_seconds=per_domain.histogram(
                names.SCORER_COMMIT_SECONDS,
                "Publishing a micro-batch: its Kafka transaction, from begin to committed",
                buckets=names.LATENCY_BUCKETS,
            ),
            end_to_end_seconds=per_domain.histogram(
                names.SCORER_END_TO_END_SECONDS,
                "Event time to prediction publish",
                buckets=names.LATENCY_BUCKETS,
            ),
            dead_letters=per_domain.counter(
                names.SCORER_DLQ,
                "Feature records sent to the DLQ",
                ["reason"],
            ),
            duplicates=per_domain.counter(
                names.SCORER_DUPLICATES,
                "Feature vectors seen again for a scored event",
            ),
            model_loads=per_domain.counter(
                names.SCORER_MODEL_LOADS,
                "Model load attempts",
                ["outcome"],
            ),
            fallbacks=per_domain.counter(
                names.SCORER_FALLBACKS,
                "Events scored by the heuristic",
                ["cause"],
            ),
            labelled=per_domain.counter(
                names.SCORER_LABELLED,
                "<domain>.labelled pairs read by online models: learned, duplicate (learned "
                "before), incomplete (no vector or online features), undecodable",
                ["result"],
            ),
            snapshots=per_domain.counter(
                names.SCORER_SNAPSHOTS,
                "Online-model snapshots saved and registered as candidates",
            ),
            lag=per_domain.gauge(
                names.SCORER_LAG,
                "Feature records not yet consumed, per partition (from the last fetch)",
                ["partition"],
            ),
            recoveries=per_domain.counter(
                names.SCORER_RECOVERIES,
                "Micro-batches whose transaction failed (a broker or coordinator lost): the "
                "scorer resumed from the last commit with a new consumer and scored them "
                "again, without a restart",
            ),
        )
