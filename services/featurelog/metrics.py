"""The feature log's Prometheus metrics, in a registry passed in; their names are spelled here.

Full names carry the ``streamml_`` namespace, and counters a ``_total`` suffix:
``streamml_feature_log_rows_written_total`` and so on.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

from services.core.metrics import LATENCY_BUCKETS, MetricMaker

ROWS_WRITTEN = "feature_log_rows_written"  # _total, by domain
FILES_WRITTEN = "feature_log_files_written"  # _total, by domain
WRITE_SECONDS = "feature_log_write_seconds"  # one part file, written and renamed
DEAD_LETTERS = "feature_log_dlq"  # _total, by domain and reason


@dataclass(frozen=True)
class FeatureLogMetrics:
    rows_written: Counter
    files_written: Counter
    write_seconds: Histogram
    dead_letters: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> FeatureLogMetrics:
        make = MetricMaker(registry)

        def counter(name: str, help_text: str, *labels: str) -> Counter:
            return make.counter(name, help_text, ["domain", *labels])

        return cls(
            rows_written=counter(ROWS_WRITTEN, "Feature vectors written to parquet"),
            files_written=counter(FILES_WRITTEN, "Parquet part files written"),
            write_seconds=make.histogram(
                WRITE_SECONDS,
                "Time to write and rename one part file",
                ["domain"],
                buckets=LATENCY_BUCKETS,
            ),
            dead_letters=counter(DEAD_LETTERS, "Feature records sent to the DLQ", "reason"),
        )
