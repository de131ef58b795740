"""``run featurizer`` and ``run scorer``: the long-running services."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from services.core.declarations import Domain
from services.core.domains import load_domain, load_domains
from services.core.metrics import serve_metrics
from services.core.schemas import SchemaStore
from services.core.serde import CodecFactory
from services.core.settings import StackSettings, load_settings

if TYPE_CHECKING:
    from services.scorer.online import OnlineFeatureReader

log = logging.getLogger(__name__)


def register(commands: Any) -> None:
    run = commands.add_parser(
        "run", help="run a service in the foreground (SIGTERM stops it cleanly)"
    )
    services = run.add_subparsers(dest="service", required=True)
    featurizer = services.add_parser("featurizer", help="events -> features")
    featurizer.add_argument(
        "--domain", action="append", help="only these domains (default: all declared)"
    )
    featurizer.set_defaults(handler=cmd_featurizer)
    scorer = services.add_parser(
        "scorer", help="features -> predictions (confluent-kafka, ONNX Runtime)"
    )
    scorer.add_argument("--domain", default="payments")
    scorer.set_defaults(handler=cmd_scorer)


def codecs_for(settings: StackSettings) -> CodecFactory:
    return CodecFactory(SchemaStore.from_dir(settings.schemas_dir), settings.schema_registry_url)


def _metrics(settings: StackSettings) -> CollectorRegistry:
    registry = CollectorRegistry()
    port = serve_metrics(registry, settings.metrics_port, host=settings.metrics_host)
    log.info("metrics on http://%s:%d/metrics", settings.metrics_host, port)
    return registry


def cmd_featurizer(args: argparse.Namespace) -> int:
    from services.featurestore.store import apply_declarations, open_store
    from services.featurizer.service import Featurizer
    from services.featurizer.settings import FeaturizerSettings

    settings = load_settings(FeaturizerSettings)
    declared = load_domains(settings.features_dir)
    domains = [declared[name] for name in args.domain] if args.domain else list(declared.values())
    apply_declarations(settings, domains)  # idempotent: each instance knows its feature views
    featurizer = Featurizer(
        settings, domains, codecs_for(settings), open_store(settings), _metrics(settings)
    )
    featurizer.install_signal_handlers()
    featurizer.run()
    return 0


def online_reader(settings: StackSettings, domain: Domain) -> OnlineFeatureReader | None:
    """The reader of the features a vector does not carry; None when the domain has none."""
    if not domain.online_features:
        return None
    import redis

    from services.featurestore.redis_layout import layout_for
    from services.featurestore.store import open_store
    from services.scorer.online import OnlineFeatureReader

    client = redis.Redis.from_url(settings.redis)
    return OnlineFeatureReader(client, layout_for(open_store(settings)), domain)


def cmd_scorer(args: argparse.Namespace) -> int:
    import threading

    from services.core.lifecycle import stop_on_signals
    from services.scorer.http import ScoringApi, ScoringHttpServer
    from services.scorer.service import Scorer
    from services.scorer.settings import ScorerSettings
    from services.scorer.vectors import VectorSpec

    settings = load_settings(ScorerSettings)
    domain = load_domain(settings.features_dir, args.domain)
    spec = VectorSpec.for_domain(domain, settings.schemas_dir)
    registry = CollectorRegistry()
    scorer = Scorer(
        settings, domain, codecs_for(settings), registry, online_reader(settings, domain)
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
