"""Prometheus metric names (the only place they are spelled) and the exposition server.

Metrics live in a ``CollectorRegistry`` that each service creates and passes in, never in
module-level globals, so tests and several services in one process do not collide.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from services.core.settings import StackSettings
from services.core.targets import announce

log = logging.getLogger(__name__)

NAMESPACE = "streamml"

FEATURIZER_EVENTS = "featurizer_events"  # _total
FEATURIZER_VECTORS = "featurizer_vectors"  # _total
FEATURIZER_DLQ = "featurizer_dlq"  # _total, by reason
FEATURIZER_DUPLICATES = "featurizer_duplicates"  # _total
FEATURIZER_RESTORED = "featurizer_restored_entries"  # _total
FEATURIZER_FORWARDED_AGAIN = "featurizer_forwarded_again"  # _total, by entity
FEATURIZER_EVICTED = "featurizer_evicted_entities"  # _total, by entity: idle past the retention
FEATURIZER_PROCESS_SECONDS = "featurizer_process_seconds"
FEATURIZER_ONLINE_WRITE_ROWS = "featurizer_online_write_rows"
FEATURIZER_ONLINE_WRITE_SECONDS = "featurizer_online_write_seconds"
FEATURIZER_ONLINE_WRITE_RETRIES = "featurizer_online_write_retries"  # _total
FEATURIZER_LAG_SECONDS = "featurizer_event_lag_seconds"
FEATURIZER_BATCH_SIZE = "featurizer_batch_size"
FEATURIZER_COMMIT_SECONDS = "featurizer_commit_seconds"
FEATURIZER_RECOVERIES = "featurizer_transaction_recoveries"  # _total

SCORER_PREDICTIONS = "scorer_predictions"  # _total, by model_version and served_by
SCORER_BATCH_SIZE = "scorer_batch_size"
SCORER_INFERENCE_SECONDS = "scorer_inference_seconds"
SCORER_END_TO_END_SECONDS = "scorer_end_to_end_seconds"
SCORER_COMMIT_SECONDS = "scorer_commit_seconds"
SCORER_RECOVERIES = "scorer_transaction_recoveries"  # _total
SCORER_DLQ = "scorer_dlq"  # _total, by reason
SCORER_DUPLICATES = "scorer_duplicates"  # _total
SCORER_MODEL_LOADS = "scorer_model_loads"  # _total, by outcome
SCORER_FALLBACKS = "scorer_fallbacks"  # _total, by cause
SCORER_LABELLED = "scorer_labelled"  # _total, by result (learned, duplicate, incomplete, ...)
SCORER_SNAPSHOTS = "scorer_model_snapshots"  # _total: online models saved and registered
SCORER_LAG = "scorer_consumer_lag"  # records behind the end, by partition
SCORER_HTTP_REQUESTS = "scorer_http_requests"  # _total, by route and status
SCORER_HTTP_SECONDS = "scorer_http_request_seconds"  # by route
SCORER_HTTP_PREDICTIONS = "scorer_http_predictions"  # _total, by model_version and served_by
SCORER_HTTP_FALLBACKS = "scorer_http_fallbacks"  # _total, by cause

MONITOR_PARTS = "monitor_parts"  # _total, by domain and kind (prediction, outcome, features)
MONITOR_REFUSED = "monitor_refused"  # _total, by domain, topic and reason
MONITOR_JOINED = "monitor_joined"  # _total, by domain and with_features
MONITOR_UNLABELLED = "monitor_unlabelled"  # _total: predictions with no outcome in the TTL
MONITOR_UNMATCHED = "monitor_unmatched"  # _total: outcomes with no prediction in the TTL
MONITOR_EVICTED = "monitor_join_evicted"  # _total: taken out early, the join being full
MONITOR_DUPLICATES = "monitor_duplicates"  # _total: parts seen again
MONITOR_PENDING = "monitor_join_pending"  # entries in the join, by domain and partition
MONITOR_RECOVERIES = "monitor_transaction_recoveries"  # _total
# Quality, by domain, model_version, served_by, segment and scope (window or total):
MONITOR_LABELLED_PAIRS = "monitor_labelled_pairs"
MONITOR_ACCURACY = "monitor_accuracy"
MONITOR_AUC = "monitor_auc"
MONITOR_LOGLOSS = "monitor_logloss"
MONITOR_COVERAGE = "monitor_coverage"  # by domain, model_version and served_by
MONITOR_DRIFT_PSI = "monitor_drift_psi"  # by domain and subject (a feature, or score)
MONITOR_DRIFT_KS = "monitor_drift_ks"  # by domain and subject
MONITOR_ALERTS = "monitor_alerts"  # _total, by domain and kind
MONITOR_RETRAIN_REQUESTS = "monitor_retrain_requests"  # _total, by domain

TRAINER_REQUESTS = "trainer_requests"  # _total, by domain and answer (retrained, skipped, ...)
TRAINER_STEPS = "trainer_steps"  # _total, by domain and step (ml.models.events' steps)
TRAINER_BUSY = "trainer_busy"  # 1 while a retrain runs, by domain
TRAINER_LABELLED_WAITING = "trainer_labelled_after_change"  # pairs counted while waiting

FEATURE_LOG_ROWS_WRITTEN = "feature_log_rows_written"  # _total, by domain
FEATURE_LOG_FILES_WRITTEN = "feature_log_files_written"  # _total, by domain
FEATURE_LOG_WRITE_SECONDS = "feature_log_write_seconds"  # one part file, written and renamed
FEATURE_LOG_DLQ = "feature_log_dlq"  # _total, by domain and reason

LATENCY_BUCKETS = (
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


def serve_metrics(registry: CollectorRegistry, port: int, host: str) -> int:
    """Serves ``/metrics`` on a daemon thread; returns the port actually bound (0 picks one)."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    bound: int = server.server_port
    return bound


def served_registry(settings: StackSettings, job: str) -> CollectorRegistry:
    """A new registry, served on ``/metrics`` at the settings' metrics address (logged, and
    announced to a local Prometheus when one watches): a service's metrics."""
    registry = CollectorRegistry()
    host = settings.metrics_host
    bound = serve_metrics(registry, settings.metrics_port, host=host)
    log.info("metrics on http://%s:%d/metrics", host, bound)
    announce(settings.home, job, host, bound)
    return registry


class MetricMaker:
    """Builds metrics in one registry under the project's namespace, so each definition says
    only its name, help, labels (and buckets)."""

    def __init__(self, registry: CollectorRegistry, leading: Sequence[str] = ()) -> None:
        self._registry = registry
        self._leading = tuple(leading)

    def with_leading(self, *labels: str) -> MetricMaker:
        """A maker whose metrics all start with ``labels`` (``"domain"`` in every service),
        so each definition names only the labels of its own."""
        return MetricMaker(self._registry, (*self._leading, *labels))

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(
            name, doc, self._labels(labels), namespace=NAMESPACE, registry=self._registry
        )

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(name, doc, self._labels(labels), namespace=NAMESPACE, registry=self._registry)

    def histogram(
        self, name: str, doc: str, labels: Sequence[str] = (), *, buckets: Sequence[float]
    ) -> Histogram:
        return Histogram(
            name,
            doc,
            self._labels(labels),
            namespace=NAMESPACE,
            registry=self._registry,
            buckets=buckets,
        )

    def _labels(self, labels: Sequence[str]) -> list[str]:
        return [*self._leading, *labels]
