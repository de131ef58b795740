"""``streamml run scorer``: the stream service and its HTTP side, wired from the settings."""

from __future__ import annotations

import logging
import threading
from importlib.metadata import version as package_version

from prometheus_client import CollectorRegistry

from services.core.domains import load_domain
from services.core.lifecycle import stop_on_signals
from services.core.metrics import serve_metrics
from services.core.schemas import SchemaStore
from services.core.serde import codecs_for
from services.core.settings import load_settings
from services.core.targets import announce
from services.core.topics import schema_subject

log = logging.getLogger(__name__)


def run(domain_name: str) -> int:
    """Scores ``domain_name``'s vectors until SIGTERM, serving the HTTP API (scoring, the Open
    Inference Protocol, health, OpenAPI and ``/metrics``) on ``STREAMML_HTTP_PORT``, or on the
    metrics port when that is not set; returns 0."""
    from services.schematools.jsonschema import json_schema_of
    from services.scorer.http.api import ScoringApi
    from services.scorer.http.app import scoring_app
    from services.scorer.http.server import ScoringHttpServer
    from services.scorer.online import open_online_reader
    from services.scorer.service import Scorer
    from services.scorer.settings import ScorerSettings
    from services.scorer.vectors import VectorSpec

    settings = load_settings(ScorerSettings)
    domain = load_domain(settings.features_dir, domain_name)
    spec = VectorSpec.for_domain(domain, settings.schemas_dir)
    predictions = SchemaStore.from_dir(settings.schemas_dir).current(
        schema_subject(domain.topics.predictions)
    )
    registry = CollectorRegistry()
    scorer = Scorer(
        settings, domain, codecs_for(settings), registry, open_online_reader(settings, domain)
    )
    stopping = threading.Event()

    def stop() -> None:
        stopping.set()
        scorer.stop()

    stop_on_signals(stop, scorer.stopping)
    api = ScoringApi(scorer, spec, registry, alive=lambda: not stopping.is_set())
    app = scoring_app(api, package_version("streamml"), json_schema_of(predictions.source))
    port = settings.metrics_port if settings.http_port is None else settings.http_port
    server = ScoringHttpServer(app, settings.metrics_host, port).start()
    scraped = server.port
    if settings.http_port is not None and settings.http_port != settings.metrics_port:
        scraped = serve_metrics(registry, settings.metrics_port, settings.metrics_host)
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, scraped)
    announce(settings.home, "scorer", settings.metrics_host, scraped)
    log.info(
        "scorer HTTP listening on %s: POST /v1/score/%s, POST /v2/models/%s/infer, "
        "GET /openapi.json, /healthz, /readyz, /metrics",
        server.url,
        domain.name,
        domain.name,
    )
    try:
        scorer.run()
    finally:
        stopping.set()
        server.close()
    return 0
