"""The featurizer's Prometheus metrics, in a registry passed in."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

from services.core import metrics as names


@dataclass(frozen=True)
class FeaturizerMetrics:
    events: Counter
    vectors: Counter
    dead_letters: Counter
    duplicates: Counter
    restored: Counter
    process_seconds: Histogram
    lag_seconds: Histogram
    write_rows: Histogram
    write_seconds: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> FeaturizerMetrics:
        ns = names.NAMESPACE
        return cls(
            events=Counter(
                names.FEATURIZER_EVENTS, "Events read", ["domain"], namespace=ns, registry=registry
            ),
            vectors=Counter(
                names.FEATURIZER_VECTORS,
                "Feature vectors published",
                ["domain"],
                namespace=ns,
                registry=registry,
            ),
            dead_letters=Counter(
                names.FEATURIZER_DLQ,
                "Events sent to the DLQ",
                ["domain", "reason"],
                namespace=ns,
                registry=registry,
            ),
            restored=Counter(
                names.FEATURIZER_RESTORED,
                "Window entries restored from the changelog when partitions were assigned",
                ["domain", "entity"],
                namespace=ns,
                registry=registry,
            ),
            duplicates=Counter(
                names.FEATURIZER_DUPLICATES,
                "Duplicate events dropped",
                ["domain"],
                namespace=ns,
                registry=registry,
            ),
            process_seconds=Histogram(
                names.FEATURIZER_PROCESS_SECONDS,
                "Time to process one event",
                ["domain"],
                namespace=ns,
                registry=registry,
                buckets=(0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05),
            ),
            lag_seconds=Histogram(
                names.FEATURIZER_LAG_SECONDS,
                "Wall clock minus event time at processing",
                ["domain"],
                namespace=ns,
                registry=registry,
                buckets=names.LATENCY_BUCKETS,
            ),
            write_rows=Histogram(
                names.FEATURIZER_ONLINE_WRITE_ROWS,
                "Rows per online-store write",
                namespace=ns,
                registry=registry,
                buckets=names.BATCH_BUCKETS,
            ),
            write_seconds=Histogram(
                names.FEATURIZER_ONLINE_WRITE_SECONDS,
                "Online-store write time",
                namespace=ns,
                registry=registry,
                buckets=names.LATENCY_BUCKETS,
            ),
        )
