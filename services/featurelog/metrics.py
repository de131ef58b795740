"""The feature log's Prometheus metrics, in a registry passed in (names in core.metrics).

Full names carry the ``streamml_`` namespace, and counters a ``_total`` suffix:
``streamml_feature_log_rows_written_total`` and so on.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

from services.core import metrics as names


@dataclass(frozen=True)
class FeatureLogMetrics:
    rows_written: Counter
    files_written: Counter
    write_seconds: Histogram
    dead_letters: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> FeatureLogMetrics:
        per_domain = names.MetricMaker(registry).with_leading("domain")
        return cls(
            rows_written=per_domain.counter(
                names.FEATURE_LOG_ROWS_WRITTEN, "Feature vectors written to parquet"
            ),
            files_written=per_domain.counter(
                names.FEATURE_LOG_FILES_WRITTEN, "Parquet part files written"
            ),
            write_seconds=per_domain.histogram(
                names.FEATURE_LOG_WRITE_SECONDS,
                "Time to write and rename one part file",
                buckets=names.LATENCY_BUCKETS,
            ),
            dead_letters=per_domain.counter(
                names.FEATURE_LOG_DLQ, "Feature records sent to the DLQ", ["reason"]
            ),
        )
