"""``streamml run scorer``: the stream service and its HTTP side, wired from the settings."""

from __future__ import annotations

import logging
import threading

from prometheus_client import CollectorRegistry

from services.core.domains import load_domain
from services.core.lifecycle import stop_on_signals
from services.core.serde import codecs_for
from services.core.settings import load_settings

log = logging.getLogger(__name__)


def run(domain_name: str) -> int:
    """Scores ``domain_name``'s vectors until SIGTERM, serving HTTP scoring, health and
    ``/metrics`` on the metrics port; returns 0."""
    from services.scorer.http.api import ScoringApi
    from services.scorer.http.server import ScoringHttpServer
    from services.scorer.online import open_online_reader
    from services.scorer.service import Scorer
    from services.scorer.settings import ScorerSettings
    from services.scorer.vectors import VectorSpec

    settings = load_settings(ScorerSettings)
    domain = load_domain(settings.features_dir, domain_name)
    spec = VectorSpec.for_domain(domain, settings.schemas_dir)
    registry = CollectorRegistry()
    scorer = Scorer(
        settings, domain, codecs_for(settings), registry, open_online_reader(settings, domain)
    )
    stopping = threading.Event()

    def stop() -> None:
        stopping.set()
        scorer.stop()

    stop_on_signals(stop, scorer.stopping)
    # In place of the plain metrics server: the same /metrics, plus scoring and health.
    api = ScoringApi(scorer, spec, registry, alive=lambda: not stopping.is_set())
    server = ScoringHttpServer(api, settings.metrics_host, settings.metrics_port).start()
    log.info(
        "scorer HTTP on %s: POST /v1/score/%s, GET /healthz, /readyz, /metrics",
        server.url,
        domain.name,
    )
    try:
        scorer.run()
    finally:
        stopping.set()
        server.close()
    return 0
