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
    forwarded_again: Counter
    evicted: Counter
    process_seconds: Histogram
    lag_seconds: Histogram
    write_rows: Histogram
    write_seconds: Histogram
    write_retries: Counter
    batch_size: Histogram
    commit_seconds: Histogram
    recoveries: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> FeaturizerMetrics:
        make = names.MetricMaker(registry)
        per_domain = make.with_leading("domain")
        return cls(
            events=per_domain.counter(names.FEATURIZER_EVENTS, "Events read"),
            vectors=per_domain.counter(
                names.FEATURIZER_VECTORS,
                "Feature vectors published",
            ),
            dead_letters=per_domain.counter(
                names.FEATURIZER_DLQ,
                "Events sent to the DLQ",
                ["reason"],
            ),
            restored=per_domain.counter(
                names.FEATURIZER_RESTORED,
                "Window entries restored from the changelog when partitions were assigned",
                ["entity"],
            ),
            forwarded_again=per_domain.counter(
                names.FEATURIZER_FORWARDED_AGAIN,
                "Forwarded events received again after a crash and not counted twice",
                ["entity"],
            ),
            evicted=per_domain.counter(
                names.FEATURIZER_EVICTED,
                "Entities whose newest event was older than the retention before their "
                "partition's newest: their state was dropped",
                ["entity"],
            ),
            duplicates=per_domain.counter(
                names.FEATURIZER_DUPLICATES,
                "Duplicate events dropped",
            ),
            process_seconds=per_domain.histogram(
                names.FEATURIZER_PROCESS_SECONDS,
                "Time to process one event",
                buckets=(0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05),
            ),
            lag_seconds=per_domain.histogram(
                names.FEATURIZER_LAG_SECONDS,
                "Wall clock minus event time at processing",
                buckets=names.LATENCY_BUCKETS,
            ),
            write_rows=make.histogram(
                names.FEATURIZER_ONLINE_WRITE_ROWS,
                "Rows per online-store write",
                buckets=names.BATCH_BUCKETS,
            ),
            write_seconds=make.histogram(
                names.FEATURIZER_ONLINE_WRITE_SECONDS,
                "Online-store write time",
                buckets=names.LATENCY_BUCKETS,
            ),
            write_retries=make.counter(
                names.FEATURIZER_ONLINE_WRITE_RETRIES,
                "Online-store writes tried again after the store did not answer (its batch "
                "waits, uncommitted, until the store is back)",
            ),
            batch_size=make.histogram(
                names.FEATURIZER_BATCH_SIZE,
                "Records per micro-batch (events and forwarded events)",
                buckets=names.BATCH_BUCKETS,
            ),
            commit_seconds=make.histogram(
                names.FEATURIZER_COMMIT_SECONDS,
                "Committing a micro-batch's transaction (its offsets, then the commit), after "
                "its records were handed to the producer",
                buckets=names.LATENCY_BUCKETS,
            ),
            recoveries=make.counter(
                names.FEATURIZER_RECOVERIES,
                "Micro-batches whose transaction failed (a broker or coordinator lost): the "
                "featurizer resumed from the last commit with a new consumer and rebuilt its "
                "state, without a restart",
            ),
        )
